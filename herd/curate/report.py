"""The curation report (paper §3.1.1): documents and bytes per stage, drop reasons, the realised
domain mix and score histograms (PNG), and the accounting check kept + dropped == input.

Writes out/report.json, out/report.md, out/drops.jsonl (every dropped or unreadable document:
id, source, stage, reason) and out/histograms.png. The counts come from each map task's `Tally`
(kept in its completion marker) and are summed by `merge_tallies`.
"""

from __future__ import annotations

import json
import os
import platform
from collections import Counter
from pathlib import Path

import numpy as np

from herd.fileio import atomic_open

STAGES = ["read", "extract", "langid", "pii", "url_dedup", "minhash_dedup", "line_dedup", "domain",
          "heuristics", "quality", "mix"]


class Tally:
    """Per-stage documents/bytes in and out, and drop counts by 'stage/reason'."""

    def __init__(self):
        self.stages = {s: [0, 0, 0, 0] for s in STAGES}  # docs_in, bytes_in, docs_out, bytes_out
        self.drops: Counter = Counter()

    def passed(self, stage: str, nbytes_in: int, nbytes_out: int | None = None) -> None:
        s = self.stages[stage]
        s[0] += 1
        s[1] += nbytes_in
        s[2] += 1
        s[3] += nbytes_in if nbytes_out is None else nbytes_out

    def dropped(self, stage: str, nbytes_in: int, reason: str) -> None:
        s = self.stages[stage]
        s[0] += 1
        s[1] += nbytes_in
        self.drops[f"{stage}/{reason.split(':', 1)[0]}"] += 1

    def to_dict(self) -> dict:
        return {"stages": self.stages, "drops": dict(self.drops)}


def merge_tallies(dicts: list[dict]) -> dict:
    stages = {s: [0, 0, 0, 0] for s in STAGES}
    drops: Counter = Counter()
    for d in dicts:
        for s, v in d.get("stages", {}).items():
            stages[s] = [a + b for a, b in zip(stages[s], v)]
        drops.update(d.get("drops", {}))
    return {"stages": stages, "drops": dict(drops)}




def _histograms(work: Path, out: Path, cfg) -> str | None:
    files = sorted((work / "c").glob("*.scores.npz"))
    scores: dict[str, list] = {}
    for f in files:
        with np.load(f) as z:
            for k in z.files:
                scores.setdefault(k, []).append(z[k])
    scores = {k: np.concatenate(v) for k, v in scores.items() if sum(len(x) for x in v)}
    if not scores:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    thresholds = {"kl": cfg.heuristics.max_kl,
                  "dup_5gram_char_frac": cfg.heuristics.max_dup_ngram_char_frac.get("5"),
                  "dirty_word_ratio": cfg.heuristics.max_dirty_word_ratio,
                  "dup_line_frac": cfg.heuristics.max_dup_line_frac, "quality_score": cfg.quality.min_score,
                  "language_score": cfg.langid.min_score, "n_words": cfg.heuristics.min_words}
    keys = sorted(scores)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8), squeeze=False)
    for ax, k in zip(axes[0], keys):
        v = scores[k]
        if k == "n_words":
            v = np.log10(np.maximum(v, 1))
            ax.set_xlabel("log10 words")
        ax.hist(v, bins=40, color="#4c72b0")
        thr = thresholds.get(k)
        if thr is not None and k != "n_words":
            ax.axvline(thr, color="#c44e52", ls="--", lw=1)
        ax.set_title(f"{k} (n={len(v)})", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    path = out / "histograms.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


def _gather_drops(work: Path, out: Path) -> tuple[int, list[dict]]:
    """Concatenate the drop side files (phase order) into out/drops.jsonl; count them."""
    parts = []
    for prefix in ("a-", "b", "c-", "e-"):
        parts += sorted(p for p in (work / "drops").glob(f"{prefix}*.jsonl"))
    n, bad = 0, []
    with atomic_open(out / "drops.jsonl", "w", encoding="utf-8") as fo:
        for p in parts:
            with open(p, encoding="utf-8") as fi:
                for line in fi:
                    fo.write(line)
                    n += 1
                    if len(bad) < 200 and '"stage": "read"' in line:
                        bad.append(json.loads(line))
    return n, bad


def write_report(cfg, out: Path, work: Path, files, a_markers, b, c_markers, e_markers, rates, target,
                 timings, seconds) -> dict:
    tal = merge_tallies(a_markers + [b] + c_markers + e_markers)
    input_docs = sum(m["input_docs"] for m in a_markers)
    input_bytes = sum(m["input_bytes"] for m in a_markers)
    kept = sum(m["kept"] for m in e_markers)
    dropped_total = sum(tal["drops"].values())
    n_drop_lines, bad = _gather_drops(work, out)
    kept_domains: dict = {}
    for m in e_markers:
        for k, v in m["domains"].items():
            kept_domains[k] = kept_domains.get(k, 0) + v
    realised = {k: v / kept for k, v in sorted(kept_domains.items())} if kept else {}
    report = {
        "input_files": len(files),
        "input_docs": input_docs,
        "input_bytes": input_bytes,
        "kept_docs": kept,
        "dropped_docs": dropped_total,
        "dropped": dict(sorted(tal["drops"].items(), key=lambda kv: -kv[1])),
        "drop_records": n_drop_lines,
        "accounting_ok": kept + dropped_total == input_docs and n_drop_lines == dropped_total,
        "stages": {s: dict(zip(["docs_in", "bytes_in", "docs_out", "bytes_out"], v))
                   for s, v in tal["stages"].items() if v[0]},
        "mix": {"enabled": cfg.mix.enabled, "target": target, "rates": rates, "realised": realised,
                "kept_per_domain": kept_domains},
        "output_files": [f for m in e_markers for f in m["files"]],
        "output_format": cfg.output.format,
        "seconds": round(seconds, 2),
        "phase_seconds": {k: round(v, 2) for k, v in timings.items()},
        "docs_per_s": round(input_docs / max(seconds, 1e-9), 1),
        "mb_per_s": round(input_bytes / 1e6 / max(seconds, 1e-9), 3),
        "executor": cfg.run.executor,
        "workers": cfg.run.workers or os.cpu_count(),
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "bad_records_sample": bad[:20],
    }
    report["histograms"] = _histograms(work, out, cfg) if cfg.output.histograms else None
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(render_markdown(report))
    return report


def render_markdown(r: dict) -> str:
    lines = ["# Curation report", "",
             f"Input: {r['input_docs']} documents, {r['input_bytes'] / 1e6:.2f} MB from {r['input_files']} "
             f"files. Kept: {r['kept_docs']}. Dropped: {r['dropped_docs']}. "
             f"Accounting kept + dropped == input: **{'OK' if r['accounting_ok'] else 'MISMATCH'}**.",
             f"Time {r['seconds']} s ({r['docs_per_s']} docs/s, {r['mb_per_s']} MB/s) on {r['workers']} "
             f"workers ({r['executor']}).", "", "| stage | docs in | MB in | docs out | MB out |",
             "|---|---|---|---|---|"]
    for s in STAGES:
        v = r["stages"].get(s)
        if v:
            lines.append(f"| {s} | {v['docs_in']} | {v['bytes_in'] / 1e6:.2f} | {v['docs_out']} | "
                         f"{v['bytes_out'] / 1e6:.2f} |")
    lines += ["", "| drop reason (stage/reason) | documents |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in r["dropped"].items()]
    m = r["mix"]
    if m["enabled"]:
        lines += ["", "| domain | target | realised | kept |", "|---|---|---|---|"]
        for k in sorted(set(m["target"]) | set(m["realised"])):
            lines.append(f"| {k} | {m['target'].get(k, 0):.3f} | {m['realised'].get(k, 0):.3f} | "
                         f"{m['kept_per_domain'].get(k, 0)} |")
    if r.get("bad_records_sample"):
        lines += ["", "Unreadable records (first 20; all are in drops.jsonl):", ""]
        lines += [f"- `{b['source']}` {b['id']}: {b['reason']}" for b in r["bad_records_sample"]]
    if r.get("histograms"):
        lines += ["", f"![score histograms]({r['histograms']})"]
    return "\n".join(lines) + "\n"
