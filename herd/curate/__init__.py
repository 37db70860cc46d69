"""Pre-training data curation (paper §3.1.1): raw web data -> clean, deduplicated, mixed corpus.

Stages, in the paper's order, each on/off and configured by a table of a TOML recipe
(herd/curate/default.toml; dataclasses in herd/curate/config.py):
  extract (HTML -> plain text) -> langid (fastText lid.176) -> pii (masks, blocked domains)
  -> dedup (URL, MinHash LSH over the whole dataset, line-level per bucket of N documents)
  -> domain (all-MiniLM-L6-v2 + logistic-regression head) -> heuristics (duplicated n-grams,
  dirty words, length/symbol/line shape, token KL divergence) -> quality (fastText score)
  -> mix (sample to domain weights).
Every document read is either kept or dropped with a reason; the report proves
kept + dropped == input.

Python API (what `herd curate` and `herd speedrun` call):

    from herd.curate import run_curation, default_config, load_recipe, train_quality

    cfg = default_config(mix={"enabled": False})  # or load_recipe("recipe.toml", ["dedup.threshold=0.7"])
    report = run_curation(cfg, ["data/crawl.warc.gz", "data/html_dir", "data/docs.jsonl"], "out/")
    report["kept_docs"], report["input_docs"], report["dropped"]   # {"reason": count}
    report["accounting_ok"]                                         # kept + dropped == input
    # out/data/part-00000.parquet (text, id, url, language, language_score, quality_score, domain, ...)
    # out/drops/*.jsonl (id, source, stage, reason), out/report.json, out/report.md, out/*.png

    train_quality(positive=["good.jsonl"], negative=["bad_dir/"], out="quality.bin")  # -> metrics dict
    cfg.quality.model = "quality.bin"

`run_curation(config, inputs, out_dir, executor=None, ray_address=None, progress=True) -> dict`
is resumable: run it again on the same out_dir after a kill and finished shards are skipped.
Inputs: WARC (.warc, .warc.gz), directories or single .html/.htm files, JSONL (.jsonl, .json,
.jsonl.gz, .jsonl.zst; fields text/html, url, timestamp), Parquet (same fields), plain text (.txt,
.md, .py, .rst, ... any other file is read as UTF-8 text; binary files are reported and dropped).
`read_documents(path)` yields the raw records one by one if you only need the readers.
"""

from herd.curate.config import CurateConfig, default_config, load_recipe


def run_curation(config, inputs, out_dir, **kwargs):
    """Run the whole curation recipe; see herd/curate/pipeline.py."""
    from herd.curate.pipeline import run_curation as _run

    return _run(config, inputs, out_dir, **kwargs)


def train_quality(positive, negative, out, **kwargs):
    """Train the fastText quality classifier; see herd/curate/quality.py."""
    from herd.curate.quality import train_quality as _train

    return _train(positive, negative, out, **kwargs)


def read_documents(path, **kwargs):
    """Yield raw records from one input file; see herd/curate/readers.py."""
    from herd.curate.readers import read_documents as _read

    return _read(path, **kwargs)


__all__ = ["CurateConfig", "default_config", "load_recipe", "run_curation", "train_quality", "read_documents"]
