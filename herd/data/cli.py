"""`herd tokenize`: documents -> token shards for pretraining (paper §3.1 -> §3.4)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "tokenize",
        help="turn documents (JSONL, Parquet, text) into token shards for pretraining",
        description="Tokenize documents into uint32 token shards with a document index and a held-out "
                    "validation split (by text hash), on all cores. Input: files or directories of .jsonl "
                    "(.gz/.zst) records with a text field, .parquet files, or .txt/.md files (one "
                    "document each).",
    )
    p.add_argument("inputs", nargs="+", help="input files or directories")
    p.add_argument("--out", required=True, help="output directory (created; must be empty or absent)")
    p.add_argument("--tokenizer", default="llama3",
                   help="tokenizer file (tiktoken format, e.g. from `herd tokenizer train`) or "
                        "'llama3' (default)")
    p.add_argument("--text-field", default="text", help="JSONL/Parquet field holding the text "
                                                        "(default: text)")
    p.add_argument("--val-fraction", type=float, default=0.005, help="share of documents held out "
                                                                     "(default 0.005)")
    p.add_argument("--no-bos", action="store_true", help="do not start documents with <|begin_of_text|>")
    p.add_argument("--no-eos", action="store_true", help="do not end documents with <|end_of_text|>")
    p.add_argument("--workers", type=int, default=0, help="processes (default: all cores)")
    p.add_argument("--shard-tokens", type=int, default=1 << 28, help="tokens per shard file (default 2^28)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.epilog = ("An interrupted run (Ctrl-C, crash) resumes when the same command is run again: shards "
                "already written are kept (OUT.tmp-tokenize/progress.json).")
    p.set_defaults(func=run)


def run(args) -> int:
    from herd.data.tokenize import tokenize_files
    from herd.errors import check_output_dir

    check_output_dir(args.out, overwrite=True)  # a file named like the output: one line, before any work

    meta = tokenize_files(args.inputs, args.tokenizer, args.out, text_field=args.text_field,
                          val_fraction=args.val_fraction, bos=not args.no_bos, eos=not args.no_eos,
                          workers=args.workers, shard_tokens=args.shard_tokens, overwrite=args.overwrite,
                          progress=not args.quiet)
    s = meta["splits"]
    print(f"{args.out}: train {s['train']['n_tokens']:,} tokens in {s['train']['n_docs']:,} documents, "
          f"val {s['val']['n_tokens']:,} tokens in {s['val']['n_docs']:,} documents "
          f"(vocab {meta['tokenizer']['n_words']:,})")
    if s["val"]["n_docs"] == 0 and args.val_fraction > 0:
        import sys

        n = s["train"]["n_docs"]
        print(f"herd: warning: the validation split is empty ({n} documents x --val-fraction "
              f"{args.val_fraction} held out none), so pretraining reports no validation loss; with few "
              "documents pass a larger --val-fraction (e.g. 0.1) or split the documents", file=sys.stderr)
    return 0
