"""`herd speech train|text-lm|synth|transcribe`: the speech adapter of paper §8 on the command line.

    herd speech text-lm --out lm/                       # a small LM that does the text form of the tasks
    herd speech train --model lm/ --out speech/         # encoder + adapter on the frozen LM
    herd speech synth --out wavs/ --n 20 --held-out     # espeak-ng utterances as WAV + manifest.jsonl
    herd generate speech/ --audio wavs/00000.wav        # the LM's answer to a recording

`herd speech train` reads its config through the one config system (--config FILE, --FIELD VALUE or
--speech.FIELD VALUE, --print-config).
"""

from __future__ import annotations

import sys

from herd.errors import HerdError

HELP = {
    "model": "the frozen LM: a herd, Meta or HF checkpoint with the Llama 3 tokenizer",
    "out": "output directory of the adapter (speech.safetensors + speech.json)",
    "tokenizer": "tokenizer instead of the checkpoint's ('llama3' or a file)",
    "kinds": "utterance kinds to train and evaluate on: digit, number, question, sentence (empty: all)",
    "train_utts": "utterances synthesised for training (training voices)",
    "eval_utts": "utterances synthesised for the held-out evaluation (held-out voices)",
    "steps": "optimizer steps",
    "batch_size": "utterances per step",
    "lr": "peak learning rate (AdamW, warmup then cosine to 10%)",
    "warmup": "warmup steps",
    "weight_decay": "AdamW weight decay",
    "seed": "seed of the data synthesis, initialisation and order",
    "eval_every": "report held-out digit accuracy every N steps (0: only at the end)",
    "dim": "Conformer width",
    "n_layers": "Conformer blocks",
    "n_heads": "attention heads (Conformer and adapter)",
    "conv_kernel": "depthwise convolution kernel of the Conformer",
    "adapter_dim": "width of the adapter's conv and transformer layer",
    "threads": "CPU threads for torch (0: torch's default)",
    "device": "cpu or cuda",
    "quiet": "no progress bars",
}


def _cls():
    from herd.speech.train import SpeechTrainConfig

    return SpeechTrainConfig


def register(sub) -> None:
    from herd.config import add_config_parser

    sp = sub.add_parser("speech", help="speech adapter on a frozen LM (paper §8): train, text-lm, synth",
                        description="The speech half of compositional multimodality: a Conformer encoder and "
                                    "an adapter trained on espeak-ng speech to feed a frozen LM.")
    ss = sp.add_subparsers(dest="speech_command", metavar="SUBCOMMAND")
    sp.set_defaults(func=lambda a: (sp.print_help(), 0)[1])

    t = add_config_parser(
        ss, "train", _cls, section="speech", field_help=HELP,
        help="train the speech encoder + adapter on a frozen LM",
        description="Synthesise utterances (spoken digits, numbers, questions, sentences) with espeak-ng in "
                    "many voices, rates and pitches; train a Conformer encoder and adapter whose embeddings, "
                    "placed between <|reserved_special_token_10|> and <|reserved_special_token_11|>, make "
                    "the frozen LM transcribe them or answer them; report accuracy on held-out voices.")
    t.set_defaults(func=run_train)

    lm = ss.add_parser("text-lm", help="train a small LM on the text form of the speech tasks (a CPU "
                                       "stand-in for Llama 3)",
                       description="Train a small herd LM (Llama 3 tokenizer) from scratch to transcribe "
                                   "(repeat) and answer the text put between the speech tokens, and save it "
                                   "as a herd checkpoint: the frozen LM for `herd speech train` on a CPU.")
    lm.add_argument("--out", required=True, help="output checkpoint directory")
    lm.add_argument("--steps", type=int, default=500, help="optimizer steps")
    lm.add_argument("--batch-size", type=int, default=32, help="sequences per step")
    lm.add_argument("--tokenizer", choices=["tasks", "llama3"], default="tasks",
                    help="tasks: a 768-id BPE learned on the task texts, with the Llama 3 special tokens "
                         "(CPU-sized); llama3: Meta's 128K tokenizer (a 128K-row output layer)")
    lm.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    lm.add_argument("--dim", type=int, default=128, help="model width")
    lm.add_argument("--n-layers", type=int, default=4, help="transformer layers")
    lm.add_argument("--seed", type=int, default=0, help="random seed")
    lm.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: default)")
    lm.set_defaults(func=run_text_lm)

    sy = ss.add_parser("synth", help="synthesise labelled utterances as WAV files",
                       description="Speak utterances with espeak-ng and write OUT/NNNNN.wav plus "
                                   "OUT/manifest.jsonl (audio, text, kind, answer, voice).")
    sy.add_argument("--out", required=True, help="output directory")
    sy.add_argument("--n", type=int, default=20, help="number of utterances")
    sy.add_argument("--kind", choices=["digit", "number", "question", "sentence"], default=None,
                    help="only this kind of utterance (default: a mix)")
    sy.add_argument("--held-out", action="store_true", help="use the held-out voices")
    sy.add_argument("--text", default=None, help="speak this text instead (one file)")
    sy.add_argument("--voice", default=None, help="espeak-ng voice for --text, e.g. en-us+f3")
    sy.add_argument("--rate", type=int, default=175, help="words per minute for --text")
    sy.add_argument("--pitch", type=int, default=50, help="pitch 0-100 for --text")
    sy.add_argument("--seed", type=int, default=0, help="random seed")
    sy.set_defaults(func=run_synth)


def run_train(args) -> int:
    from herd.config import load_args

    cfg = load_args(args)
    if args.print_config:
        from herd.config import print_config

        return print_config(cfg, "speech", header="herd speech train config; load it with: "
                                                  "herd speech train --config FILE")
    cfg.validate()
    import torch  # noqa: F401

    from herd.speech.train import train_speech

    train_speech(cfg, log=lambda s: print(s, file=sys.stderr))
    return 0


def run_text_lm(args) -> int:
    from pathlib import Path

    if args.steps < 1 or args.batch_size < 1:
        raise HerdError("--steps and --batch-size must be at least 1")
    if args.dim % 64:
        raise HerdError(f"--dim must be a multiple of 64 (heads of 32), got {args.dim}")
    import torch

    from herd.checkpoint import save_herd
    from herd.speech.data import task_tokenizer
    from herd.speech.train import evaluate_text, text_lm_args, train_text_lm
    from herd.tokenizer import Tokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    tok = Tokenizer.llama3() if args.tokenizer == "llama3" else task_tokenizer()
    margs = text_lm_args(dim=args.dim, n_layers=args.n_layers, n_heads=args.dim // 32,
                         n_kv_heads=args.dim // 64,
                         vocab_size=tok.n_words)
    lm, losses = train_text_lm(tok, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                               args=margs)
    acc = evaluate_text(lm, tok)
    save_herd(lm, Path(args.out), tokenizer=tok, extra={"speech_text_lm": {
        "steps": args.steps, "final_loss": losses[-1], "text_accuracy": acc}})
    print(f"text LM ({lm.num_params() / 1e6:.1f}M parameters, {tok.n_words} tokens): loss {losses[0]:.3f} -> "
          f"{losses[-1]:.3f}; text-form accuracy: " + ", ".join(f"{k} {v:.0%}" for k, v in acc.items())
          + f" -> {args.out}", file=sys.stderr)
    return 0


def run_synth(args) -> int:
    import json
    import random
    from pathlib import Path

    from herd.fileio import atomic_write
    from herd.speech.data import draw_utterance, draw_voice
    from herd.speech.espeak import Voice, synthesize
    from herd.speech.features import write_wav

    if args.n < 1:
        raise HerdError(f"--n must be at least 1, got {args.n}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    recs = []
    n = 1 if args.text else args.n
    for i in range(n):
        if args.text:
            text, kind, answer = args.text, "text", None
            voice = Voice(args.voice or "en-us", rate=args.rate, pitch=args.pitch)
        else:
            u = draw_utterance(rng, args.kind)
            text, kind, answer = u.text, u.kind, u.answer
            voice = Voice(args.voice, rate=args.rate, pitch=args.pitch) if args.voice else draw_voice(rng,
                                                                                                      args.held_out)
        wav, sr = synthesize(text, voice)
        name = f"{i:05d}.wav"
        write_wav(out / name, wav, sr)
        recs.append({"audio": name, "text": text, "kind": kind, "answer": answer, "voice": voice.name,
                     "rate": voice.rate, "pitch": voice.pitch, "range": voice.range,
                     "seconds": len(wav) / sr})
    atomic_write(out / "manifest.jsonl", "".join(json.dumps(r) + "\n" for r in recs))
    print(f"{len(recs)} utterances -> {out}", file=sys.stderr)
    return 0
