"""Offline speech synthesis with espeak-ng, through the library that the PyPI wheel
`espeakng-loader` bundles (libespeak-ng.so and its voice data; the library is GPL-3.0 and is
loaded at run time, not shipped with herd).

The library is driven with ctypes in synchronous mode: `espeak_Synth` returns after the whole
utterance has been passed, block by block, to a callback that collects the 16-bit samples (no
audio device, no temporary files). One process-wide synthesiser; calls are serialised by a lock.

    wav, sr = synthesize("seven", voice="en-us+f3", rate=160, pitch=60)   # float32 in [-1, 1], 22050 Hz
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from pathlib import Path

from herd.errors import HerdError

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_espeakRATE, _espeakVOLUME, _espeakPITCH, _espeakRANGE = 1, 2, 3, 4
_espeakCHARS_UTF8 = 1
_POS_CHARACTER = 1
_EE_OK = 0

# The English voices of espeak-ng and its voice variants (espeak-ng-data/voices/!v).
ENGLISH = ["en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd"]
VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
            "klatt3",
            "adam", "ed", "john", "max", "paul", "robert", "steph", "linda", "Annie", "Andy", "benjamin",
            "grandma", "grandpa", "iven", "michel", "rob", "travis", "victor", "zac", "Andrea",
            "Mike", "Storm"]


@dataclass(frozen=True)
class Voice:
    """A speaker: espeak-ng voice name (language+variant), speaking rate (words per minute),
    base pitch and pitch range (0-100)."""
    name: str
    rate: int = 175
    pitch: int = 50
    range: int = 50

    def __str__(self) -> str:
        return f"{self.name}@{self.rate}wpm/p{self.pitch}/r{self.range}"


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Engine:
    def __init__(self):
        try:
            import espeakng_loader
        except ImportError:
            raise HerdError("speech synthesis needs the espeak-ng library from the PyPI package "
                            "espeakng-loader; install it with `pip install --no-deps espeakng-loader` (or "
                            "`pip install herd[speech]`)") from None
        lib_path, data = espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
        if not Path(lib_path).is_file():
            raise HerdError(f"espeak-ng library not found at {lib_path}; reinstall espeakng-loader")
        self.data = Path(data)
        self.lib = lib = ctypes.CDLL(lib_path)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        self.sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data).encode(), 0)
        if self.sample_rate <= 0:
            raise HerdError(f"espeak-ng failed to initialise with the voice data in {data}")
        self._chunks: list[bytes] = []
        self._cb = _CALLBACK(self._collect)  # kept alive as long as the engine
        lib.espeak_SetSynthCallback(self._cb)
        self.lock = threading.Lock()
        self.voice = None

    def _collect(self, wav, n, events):
        if n > 0 and wav:
            self._chunks.append(ctypes.string_at(wav, 2 * n))
        return 0  # 0 = go on

    def synth(self, text: str, voice: Voice) -> bytes:
        lib = self.lib
        with self.lock:
            if voice.name != self.voice:
                variant = voice.name.partition("+")[2]
                if variant and not (self.data / "voices" / "!v" / variant).is_file():
                    raise HerdError(f"unknown espeak-ng voice variant {variant!r} in {voice.name!r}; the "
                                    f"variants are the files in {self.data / 'voices' / '!v'}")
                if lib.espeak_SetVoiceByName(voice.name.encode()) != _EE_OK:
                    raise HerdError(f"unknown espeak-ng voice {voice.name!r}; use a language such as "
                                    "'en-us', optionally with a variant ('en-us+f3')")
                self.voice = voice.name
            for p, v in ((_espeakRATE, voice.rate), (_espeakPITCH, voice.pitch), (_espeakRANGE, voice.range),
                         (_espeakVOLUME, 100)):
                lib.espeak_SetParameter(p, int(v), 0)
            self._chunks = []
            raw = text.encode("utf-8") + b"\0"
            if lib.espeak_Synth(raw, len(raw), 0, _POS_CHARACTER, 0, _espeakCHARS_UTF8, None, None) != _EE_OK:
                raise HerdError(f"espeak-ng could not synthesise {text!r}")
            lib.espeak_Synchronize()
            return b"".join(self._chunks)


_ENGINE: _Engine | None = None


def engine() -> _Engine:
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Engine()
    return _ENGINE


def synthesize(text: str, voice: Voice | str = "en-us", **kw):
    """Speak `text`: (samples float32 numpy array in [-1, 1], sample rate)."""
    import numpy as np

    if isinstance(voice, str):
        voice = Voice(voice, **kw)
    e = engine()
    pcm = np.frombuffer(e.synth(text, voice), dtype=np.int16)
    return pcm.astype(np.float32) / 32768.0, e.sample_rate
