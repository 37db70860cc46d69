"""`herd tokenizer train|encode|decode|stats`: train a Llama-3-style BPE tokenizer and use one (paper §3.2).

    herd tokenizer train corpus/ more.txt --vocab-size 4096 --out tokenizer.model
    herd tokenizer encode --tokenizer llama3 "Hello world"        (or text on stdin)
    herd tokenizer decode --tokenizer tokenizer.model 9906 1917
    herd tokenizer stats --tokenizer llama3 --input corpus/       (chars/token, bytes/token, MB/s)

Heavy imports happen inside the command functions so `herd --help` stays fast.
"""

from __future__ import annotations

import sys
import time

TOKENIZER_HELP = ("'llama3' (the real Llama 3 tokenizer from llama-models) or a tokenizer.model path / "
                  "herd checkpoint dir")


def _train(args) -> int:
    from herd.errors import HerdError, check_output_file
    from herd.tokenizer.train import count_files, train_bpe

    inputs = (args.inputs or []) + (args.input or [])
    if not inputs:
        raise HerdError("give the text to train on: herd tokenizer train corpus/ ... (or --input corpus/)")
    args.input = inputs
    check_output_file(args.out, args.overwrite, example="tokenizer.model")  # before the training, not after
    if args.vocab_size < 768:
        raise HerdError(f"--vocab-size must be >= 768 (256 specials + 512 BPE ids), got {args.vocab_size}")
    if args.min_frequency < 1:
        raise HerdError(f"--min-frequency must be a positive integer, got {args.min_frequency}")
    t0 = time.time()
    n_files = count_files(args.input)
    print(f"training a BPE tokenizer of {args.vocab_size} ids ({args.vocab_size - 256} BPE + 256 special) "
          f"on {n_files} file(s)", file=sys.stderr)
    tok = train_bpe(files=args.input, vocab_size=args.vocab_size, min_frequency=args.min_frequency,
                    show_progress=not args.quiet, allow_smaller=args.allow_smaller)
    tok.save(args.out)
    print(f"saved {args.out}: {len(tok.mergeable_ranks)} BPE ranks + 256 special tokens = vocab_size "
          f"{tok.n_words} ({time.time() - t0:.1f} s); every merge checked against tiktoken's rank order")
    return 0


def _read_text(args) -> str:
    if args.text:
        return " ".join(args.text)
    if args.file:
        from herd.errors import read_utf8

        return read_utf8(args.file, "text file")
    return sys.stdin.read()


def _encode(args) -> int:
    from herd.tokenizer import Tokenizer

    tok = Tokenizer.from_spec(args.tokenizer)
    text = _read_text(args)
    ids = tok.encode(text, bos=args.bos, eos=args.eos, allowed_special="all" if args.allow_special else None)
    if args.pieces:
        for i in ids:
            print(i, repr(tok.id_to_piece(i).decode("utf-8", errors="backslashreplace")))
    else:
        print(" ".join(map(str, ids)))
    print(f"{len(text)} chars -> {len(ids)} tokens", file=sys.stderr)
    return 0


def _decode(args) -> int:
    from herd.errors import HerdError
    from herd.tokenizer import Tokenizer

    tok = Tokenizer.from_spec(args.tokenizer)
    raw = args.ids or sys.stdin.read().split()
    try:
        ids = [int(x) for x in raw]
    except ValueError:
        raise HerdError("decode takes integer token ids (arguments or "
                        "whitespace-separated on stdin)") from None
    sys.stdout.write(tok.decode(ids) + "\n")
    return 0


def _stats(args) -> int:
    from herd.tokenizer import Tokenizer
    from herd.tokenizer.train import iter_texts

    texts = list(iter_texts(args.input))
    n_chars = sum(map(len, texts))
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    print(f"{len(texts)} documents, {n_chars:,} chars, {n_bytes:,} bytes")
    for spec in args.tokenizer:
        tok = Tokenizer.from_spec(spec)
        t0 = time.time()
        n_tokens = sum(map(len, tok.encode_batch(texts, num_threads=args.threads)))
        dt = max(time.time() - t0, 1e-9)
        print(f"{spec}: vocab {tok.n_words}, {n_tokens:,} tokens, {n_chars / max(n_tokens, 1):.3f} "
              f"chars/token, {n_bytes / max(n_tokens, 1):.3f} bytes/token, {n_bytes / dt / 1e6:.1f} MB/s")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("tokenizer", help="train, inspect and use BPE tokenizers (paper §3.2)",
                              description="Train a Llama-3-style BPE tokenizer, encode/decode text, measure "
                                          "compression.")
    sub = p.add_subparsers(dest="tokenizer_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])

    t = sub.add_parser("train", help="train a new BPE tokenizer (HF tokenizers trainer, saved for tiktoken)",
                       description="Train a byte-level BPE with Llama 3's split pattern and special tokens. "
                                   "vocab_size counts the 256 special tokens. Output: tiktoken's "
                                   "file format.")
    t.add_argument("inputs", nargs="*", metavar="FILE_OR_DIR",
                   help="text files or directories (searched recursively; .jsonl records give their 'text')")
    t.add_argument("--input", nargs="+", metavar="FILE_OR_DIR", help="the same as the positional inputs")
    t.add_argument("--vocab-size", type=int, required=True, help="total ids incl. 256 specials (>= 768)")
    t.add_argument("--out", required=True, help="output tokenizer.model path")
    t.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    t.add_argument("--min-frequency", type=int, default=2, help="least count of a pair to merge (default 2)")
    t.add_argument("--allow-smaller", action="store_true",
                   help="save a smaller vocabulary if the corpus runs out of merges (default: error)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=_train)

    e = sub.add_parser("encode", help="print the token ids of a text", description="Encode text (arguments, "
                       "--file, or stdin) and print the ids; --pieces shows each token's bytes.")
    e.add_argument("text", nargs="*", help="text to encode (default: stdin)")
    e.add_argument("--tokenizer", default="llama3", help=TOKENIZER_HELP)
    e.add_argument("--file", help="encode this file's text")
    e.add_argument("--bos", action="store_true", help="prepend <|begin_of_text|>")
    e.add_argument("--eos", action="store_true", help="append <|end_of_text|>")
    e.add_argument("--allow-special", action="store_true",
                   help="turn text like <|eot_id|> into the special token (default: plain text)")
    e.add_argument("--pieces", action="store_true", help="one token per line with its text")
    e.set_defaults(func=_encode)

    d = sub.add_parser("decode", help="print the text of token ids", description="Decode token ids to text.")
    d.add_argument("ids", nargs="*", help="token ids (default: stdin)")
    d.add_argument("--tokenizer", default="llama3", help=TOKENIZER_HELP)
    d.set_defaults(func=_decode)

    s = sub.add_parser("stats", help="compression (chars/token, bytes/token) and speed on a corpus",
                       description="Encode a corpus with one or more tokenizers on all cores; print "
                                   "compression.")
    s.add_argument("--input", nargs="+", required=True, metavar="FILE_OR_DIR",
                   help="text files or directories")
    s.add_argument("--tokenizer", nargs="+", default=["llama3"],
                   help=TOKENIZER_HELP + " (several to compare)")
    s.add_argument("--threads", type=int, default=None, help="encoding threads (default: all cores)")
    s.set_defaults(func=_stats)


__all__ = ["register"]
