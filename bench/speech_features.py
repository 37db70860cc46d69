"""Log-mel features: herd (torch.stft in float64 + HTK mel, herd/speech/features.py) against
transformers.audio_utils.spectrogram (numpy) on the same 16 kHz audio, interleaved; prints the
ratio and the largest difference.

    python bench/speech_features.py [--seconds 10] [--reps 5]
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    import numpy as np
    import torch
    from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

    from herd.speech.espeak import synthesize
    from herd.speech.features import log_mel, resample

    torch.set_num_threads(1)
    wav, sr = synthesize("what is two plus three, the cat sees a red ball, forty two " * 3, "en-us+f3")
    x = resample(torch.from_numpy(wav), sr, 16000).numpy()
    x = np.resize(x, int(a.seconds * 16000)).astype(np.float32)
    fb = mel_filter_bank(201, 80, 0, 8000, 16000, norm=None, mel_scale="htk")
    win = window_function(400, "hann")
    t_herd, t_hf = [], []
    for _ in range(a.reps):
        t = time.perf_counter()
        ours = log_mel(x)
        t_herd.append(time.perf_counter() - t)
        t = time.perf_counter()
        ref = spectrogram(x, win, 400, 160, power=2.0, mel_filters=fb, log_mel="log", mel_floor=1e-10)
        t_hf.append(time.perf_counter() - t)
    h, f = min(t_herd), min(t_hf)
    print(f"{a.seconds:.0f} s of 16 kHz audio, best of {a.reps}: herd {h * 1e3:.1f} ms, "
          f"transformers {f * 1e3:.1f} ms, "
          f"herd/transformers time ratio {h / f:.2f}; max |diff| {np.abs(ours.numpy().T - ref).max():.2e}")


if __name__ == "__main__":
    main()
