"""Audio input for the speech adapter (paper §8): WAV files, resampling, 80-dim log-mel features.

Everything is computed in torch (torchaudio's CPU wheel does not import beside this torch): a
windowed-sinc resampler to 16 kHz, then `torch.stft` (25 ms Hann window, 10 ms hop, 400-point
FFT, centred with reflection padding) and an HTK mel filterbank of 80 triangles over 0-8 kHz,
power spectrum, natural log with floor 1e-10. The same numbers as `transformers.audio_utils`'
`spectrogram(..., power=2.0, mel_filters=mel_filter_bank(201, 80, 0, 8000, 16000), log_mel="log")`
(tests/speech/test_features.py checks it to 1e-5). The encoder sees 100 frames a second, stacked
4 at a time into 40 ms frames as in the paper.
"""

from __future__ import annotations

import math
import wave
from pathlib import Path

from herd.errors import HerdError

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
N_MELS = 80
MEL_FLOOR = 1e-10


def hz_to_mel(f):
    return 2595.0 * math.log10(1.0 + f / 700.0)


def mel_filter_bank(n_freqs: int = N_FFT // 2 + 1, n_mels: int = N_MELS, f_min: float = 0.0,
                    f_max: float = SAMPLE_RATE / 2, sample_rate: int = SAMPLE_RATE):
    """HTK-scale triangular filters [n_freqs, n_mels] (unnormalised), as transformers'
    `mel_filter_bank(..., norm=None, mel_scale="htk")` builds them (in float64)."""
    import torch

    mels = torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2, dtype=torch.float64)
    centres = 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    freqs = torch.linspace(0, sample_rate // 2, n_freqs, dtype=torch.float64)
    diff = centres[1:] - centres[:-1]
    slopes = centres[None, :] - freqs[:, None]  # [n_freqs, n_mels + 2]
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0)


_CACHE: dict = {}


def log_mel(wav, sample_rate: int = SAMPLE_RATE):
    """80-dim log-mel features [frames, 80] (float32) of a mono waveform (1-D tensor or array),
    resampled to 16 kHz first when needed. frames = 1 + len // 160."""
    import torch

    x = torch.as_tensor(wav, dtype=torch.float32)
    if x.dim() != 1:
        raise HerdError(f"expected a mono waveform (1-D), got shape {tuple(x.shape)}")
    if sample_rate != SAMPLE_RATE:
        x = resample(x, sample_rate, SAMPLE_RATE)
    if x.numel() < N_FFT // 2 + 1:  # reflection padding needs at least half a window
        x = torch.nn.functional.pad(x, (0, N_FFT // 2 + 1 - x.numel()))
    if "fb" not in _CACHE:
        _CACHE["fb"] = mel_filter_bank()
        _CACHE["win"] = torch.hann_window(N_FFT, periodic=True, dtype=torch.float64)
    # in float64 (a few ms per second of audio): the log of quiet bins keeps full float32 accuracy
    spec = torch.stft(x.double(), N_FFT, HOP, N_FFT, _CACHE["win"], center=True, pad_mode="reflect",
                      return_complex=True)
    power = spec.real.square() + spec.imag.square()  # [freqs, frames]
    mel = _CACHE["fb"].T @ power
    return torch.log(torch.clamp(mel, min=MEL_FLOOR)).T.float().contiguous()


def resample(x, orig: int, new: int, taps: int = 6, rolloff: float = 0.99):
    """Band-limited resampling of a 1-D float tensor with a Hann-windowed sinc kernel (a polyphase
    filter of `taps` zero crossings each side; the cutoff at `rolloff` x the lower Nyquist)."""
    import torch

    g = math.gcd(orig, new)
    orig, new = orig // g, new // g
    if orig == new:
        return x
    cutoff = min(orig, new) * rolloff
    width = math.ceil(taps * orig / cutoff)
    # [1, K] input offsets (in s*orig)
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None] / orig
    t = -torch.arange(new, dtype=torch.float64)[:, None] / new + idx  # [new, K]
    t = (t * cutoff).clamp(-taps, taps)
    window = torch.cos(t * math.pi / taps / 2) ** 2
    t = t * math.pi
    kernel = (torch.where(t == 0, torch.tensor(1.0, dtype=torch.float64), torch.sin(t) / t)
              * window * cutoff / orig)
    kernel = kernel.float()[:, None]  # [new, 1, K]
    n = x.numel()
    xp = torch.nn.functional.pad(x[None, None], (width, width + orig))
    y = torch.nn.functional.conv1d(xp, kernel, stride=orig)  # [1, new, frames]
    y = y[0].T.reshape(-1)
    return y[: math.ceil(new * n / orig)]


def read_wav(path) -> tuple:
    """(float32 mono samples in [-1, 1] as a tensor, sample rate) of a PCM WAV file (8/16/24/32-bit;
    several channels are averaged)."""
    import numpy as np
    import torch

    p = Path(path)
    if not p.is_file():
        raise HerdError(f"audio file not found: {p}")
    try:
        with wave.open(str(p), "rb") as w:
            ch, width, sr, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError) as e:
        raise HerdError(f"{p}: not a PCM WAV file ({e}); convert it, e.g. `ffmpeg -i IN -ar 16000 -ac "
                        "1 OUT.wav`") \
            from None
    if width == 1:
        a = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128) / 128
    elif width == 2:
        a = np.frombuffer(raw, "<i2").astype(np.float32) / 32768
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        a = ((b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8).astype(np.float32) / 8388608
    elif width == 4:
        a = np.frombuffer(raw, "<i4").astype(np.float32) / 2147483648
    else:
        raise HerdError(f"{p}: unsupported sample width {width} bytes")
    a = a.reshape(-1, ch).mean(1) if ch > 1 else a
    if a.size == 0:
        raise HerdError(f"{p}: the WAV file has no samples")
    return torch.from_numpy(np.ascontiguousarray(a)), sr


def write_wav(path, samples, sample_rate: int) -> None:
    """Write mono float samples in [-1, 1] as a 16-bit PCM WAV file (atomically)."""
    import numpy as np

    from herd.fileio import atomic_open

    a = np.asarray(samples, dtype=np.float32)
    pcm = (np.clip(a, -1, 1) * 32767).round().astype("<i2")
    with atomic_open(path, "wb") as f, wave.open(f, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
