"""`herd generate CKPT --audio FILE`: the frozen LM's answer to a recording, through the speech adapter.

CKPT is a speech adapter directory (made by `herd speech train`; it names its LM) or an LM
checkpoint with `--speech ADAPTER_DIR`. `--prompt TEXT` is the instruction that follows the speech
(default: the transcription instruction; the adapter was trained with "Transcribe the audio." and
"Answer with a number."). Each --audio file gets one answer line.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from herd.errors import HerdError


def run_audio(args) -> int:
    import torch

    from herd.checkpoint import load_model
    from herd.inference.sampling import check_sampling
    from herd.speech.data import TRANSCRIBE, Layout
    from herd.speech.features import log_mel, read_wav
    from herd.speech.train import freeze, generate_from_speech, is_adapter, load_adapter

    check_sampling(args.temperature, args.top_p, args.top_k)
    if (len(args.prompt) > 1 or args.prompts_file or args.chat or args.draft or args.out
            or args.num_samples != 1):
        raise HerdError("--audio takes at most one --prompt (the instruction after the speech) and none of "
                        "--prompts-file, --chat, --draft, --out, --num-samples")
    if args.max_new_tokens < 1:
        raise HerdError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    adapter = args.speech or (args.ckpt if is_adapter(args.ckpt) else None)
    if adapter is None:
        raise HerdError(f"{args.ckpt} is not a speech adapter; give the adapter directory of `herd speech "
                        "train` as CKPT, or --speech DIR beside an LM checkpoint")
    waves = [read_wav(a) for a in args.audio]  # a bad file fails before the model loads
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or "cpu"
    speech, cfg = load_adapter(adapter, device=device)
    lm_path = args.ckpt if args.speech else cfg.get("lm")
    if not lm_path or not Path(lm_path).exists():
        raise HerdError(f"the LM of the adapter ({lm_path}) is not there; give its checkpoint as CKPT with "
                        f"--speech {adapter}")
    lm, tok = load_model(lm_path, device=device, tokenizer=args.tokenizer or cfg.get("tokenizer"))
    if tok is None:
        raise HerdError(f"{lm_path} has no tokenizer; pass --tokenizer llama3 (or a tokenizer file)")
    if lm.args.dim != speech.args.lm_dim:
        raise HerdError(f"the adapter was trained for an LM of width {speech.args.lm_dim}, but {lm_path} has "
                        f"width {lm.args.dim}; give the LM it was trained on")
    freeze(lm)
    lay = Layout(tok)
    instruction = args.prompt[0] if args.prompt else TRANSCRIBE
    for path, (wav, sr) in zip(args.audio, waves):
        t0 = time.perf_counter()
        ids = generate_from_speech(lm, speech, lay, log_mel(wav, sr), instruction, args.max_new_tokens,
                                   args.temperature, args.top_p, args.top_k, args.seed)
        text = tok.decode(ids)
        print(text if len(args.audio) == 1 else f"{path}\t{text}", flush=True)
        print(f"[{len(wav) / sr:.2f}s of audio, {len(ids)} tokens in {time.perf_counter() - t0:.2f}s]",
              file=sys.stderr)
    return 0
