"""Log-mel features, resampling, WAV I/O and espeak-ng synthesis (paper §8 input)."""

import numpy as np
import pytest
import torch

from herd.errors import HerdError
from herd.speech import features as F
from herd.speech.espeak import Voice, synthesize


@pytest.fixture(scope="module")
def speech16k():
    wav, sr = synthesize("what is two plus three", Voice("en-gb-scotland+f2", rate=150, pitch=70))
    return F.resample(torch.from_numpy(wav), sr, F.SAMPLE_RATE).numpy()


def test_mel_filter_bank_equals_transformers():
    from transformers.audio_utils import mel_filter_bank

    ref = mel_filter_bank(201, 80, 0, 8000, 16000, norm=None, mel_scale="htk")
    assert np.abs(F.mel_filter_bank().numpy() - ref).max() < 1e-12


@pytest.mark.parametrize("n", [161, 16000, 23457])
def test_log_mel_equals_transformers(speech16k, n):
    from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

    x = np.resize(speech16k, n).astype(np.float32)
    ref = spectrogram(x, window_function(400, "hann"), 400, 160, power=2.0,
                      mel_filters=mel_filter_bank(201, 80, 0, 8000, 16000, norm=None, mel_scale="htk"),
                      log_mel="log", mel_floor=1e-10)
    ours = F.log_mel(x)
    assert ours.shape == (1 + n // 160, 80) and ours.dtype == torch.float32
    assert np.abs(ours.numpy().T - ref).max() <= 1e-5


def test_resample_keeps_in_band_tones_and_removes_aliases():
    t = np.arange(22050) / 22050
    for f, keep in ((1000, True), (3000, True), (10000, False)):
        y = F.resample(torch.from_numpy(np.sin(2 * np.pi * f * t).astype(np.float32)), 22050, 16000).numpy()
        assert len(y) == 16000
        mid = y[200:-200]
        if keep:
            want = np.sin(2 * np.pi * f * np.arange(16000) / 16000)[200:-200]
            assert np.abs(mid - want).max() < 5e-3
        else:
            assert np.abs(mid).max() < 2e-2  # 10 kHz is above the new Nyquist: filtered, not aliased
    assert F.resample(torch.ones(10), 16000, 16000).shape == (10,)


def test_wav_roundtrip_and_errors(tmp_path, speech16k):
    p = tmp_path / "a.wav"
    F.write_wav(p, speech16k, 16000)
    x, sr = F.read_wav(p)
    assert sr == 16000 and x.shape == (len(speech16k),)
    assert np.abs(x.numpy() - speech16k).max() < 1e-4
    a, b = F.log_mel(x, sr), F.log_mel(speech16k)
    loud = b > -6  # 16-bit quantisation changes only the near-silent bins noticeably
    assert loud.float().mean() > 0.2 and (a - b)[loud].abs().max() < 0.05
    with pytest.raises(HerdError, match="not found"):
        F.read_wav(tmp_path / "missing.wav")
    (tmp_path / "bad.wav").write_bytes(b"not a wav")
    with pytest.raises(HerdError, match="not a PCM WAV"):
        F.read_wav(tmp_path / "bad.wav")
    with pytest.raises(HerdError, match="mono"):
        F.log_mel(torch.zeros(2, 100))


def test_espeak_voices_rates_and_pitches_differ():
    a, sr = synthesize("seven", Voice("en-us+m1", rate=175, pitch=50))
    b, _ = synthesize("seven", Voice("en-us+m1", rate=175, pitch=50))
    c, _ = synthesize("seven", Voice("en-us+f3", rate=175, pitch=50))
    slow, _ = synthesize("seven", Voice("en-us+m1", rate=100, pitch=50))
    high, _ = synthesize("seven", Voice("en-us+m1", rate=175, pitch=90))
    assert sr == 22050 and a.dtype == np.float32 and 0.05 < np.abs(a).max() <= 1
    assert abs(len(a) - len(b)) < 0.02 * len(a)  # espeak-ng varies a few samples between calls
    assert len(slow) > 1.3 * len(a)
    assert not np.array_equal(a, c) and not np.array_equal(a, high)
    with pytest.raises(HerdError, match="variant"):
        synthesize("seven", "en-us+nosuchvoice")
    with pytest.raises(HerdError, match="unknown espeak-ng voice"):
        synthesize("seven", "xx-nosuchlanguage")
