"""End-to-end curation runs: accounting on a fuzz corpus, resume after a kill, output formats, CLI."""

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from herd.curate import default_config, run_curation
from herd.curate.config import load_recipe
from herd.errors import HerdError


def fast_config(**kw):
    # Domain labels (MiniLM) are exercised in test_domain.py (slow); everything else runs here.
    base = {"domain": {"enabled": False}, "mix": {"enabled": False}, "run": {"workers": 1},
            "output": {"histograms": False}}
    for k, v in kw.items():
        base.setdefault(k, {}).update(v)
    return default_config(**base)


def read_output(out: Path):
    rows = []
    for f in sorted((out / "data").glob("*.parquet")):
        rows += pq.read_table(f).to_pylist()
    return rows


def read_drops(out: Path):
    return [json.loads(line) for line in (out / "drops.jsonl").read_text().splitlines()]


def test_fuzz_corpus_never_stops_and_accounts_every_record(fuzz_corpus, tmp_path):
    root, n_records, n_bad = fuzz_corpus
    out = tmp_path / "out"
    r = run_curation(fast_config(output={"histograms": True}), [root], out, progress=False)
    kept, drops = read_output(out), read_drops(out)
    assert r["accounting_ok"]
    assert r["kept_docs"] + r["dropped_docs"] == r["input_docs"] == len(kept) + len(drops)
    assert r["input_docs"] >= n_records - 2  # the truncated gzip may hold fewer records
    # Every document id appears exactly once: in the output or in the drop file.
    ids = [k["id"] for k in kept] + [d["id"] for d in drops]
    assert len(ids) == len(set(ids))
    # Each bad record is reported with its source and reason.
    reasons = Counter(d["reason"].split(":")[0] for d in drops if d["stage"] == "read")
    for kind in ("malformed_json", "wrong_type", "missing_field", "invalid_utf8", "invalid_unicode",
                 "binary_file", "corrupt_file"):
        assert reasons[kind] >= 1, (kind, reasons)
    assert reasons["wrong_type"] >= 5  # int text, list url, bad timestamp, dict html, parquet ints
    for d in drops:
        assert d["source"] and d["reason"] and d["stage"]
    by_src = {Path(d["source"]).name for d in drops if d["stage"] == "read"}
    assert {"records.jsonl", "blob.bin", "corrupt.warc.gz", "corrupt.parquet", "broken.jsonl.gz"} <= by_src
    # URL dedup kept the newest copy; empty and binary HTML were dropped at extraction.
    url_drops = [d for d in drops if d["stage"] == "url_dedup"]
    assert any(d["id"].endswith("records.jsonl#0") for d in url_drops)
    assert any("crawl.warc.gz#0" in d["id"] for d in url_drops)  # the older of the two WARC copies
    assert any(Path(d["source"]).name == "empty.html" and d["reason"] == "empty_text" for d in drops)
    # Kept documents carry their metadata.
    for k in kept:
        assert k["language"] and 0.0 <= k["language_score"] <= 1.0 and k["text"].strip()
    assert (out / "report.md").exists() and (out / "histograms.png").stat().st_size > 1000
    rep = json.loads((out / "report.json").read_text())
    assert rep["stages"]["read"]["docs_in"] == r["input_docs"]


def test_killed_run_resumes_without_duplicates_or_loss(fuzz_corpus, tmp_path, monkeypatch):
    import herd.curate.pipeline as P

    root, _, _ = fuzz_corpus
    cfg = fast_config(run={"workers": 1, "html_files_per_task": 3})
    ref = run_curation(cfg, [root], tmp_path / "ref", progress=False)
    out = tmp_path / "out"
    real_c, calls = P.phase_c, []

    def dying_phase_c(task_id, *a):  # the "kill": a crash in the middle of phase C
        calls.append(task_id)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_c(task_id, *a)

    monkeypatch.setattr(P, "phase_c", dying_phase_c)
    with pytest.raises(KeyboardInterrupt):
        run_curation(cfg, [root], out, progress=False)
    monkeypatch.setattr(P, "phase_c", real_c)
    done_before = sorted(p.name for p in (out / "work" / "c").glob("*.done.json"))
    assert len(done_before) == 2
    r = run_curation(cfg, [root], out, progress=False)
    assert r["accounting_ok"] and r["input_docs"] == ref["input_docs"] and r["kept_docs"] == ref["kept_docs"]
    assert sorted(x["id"] for x in read_output(out)) == sorted(x["id"] for x in read_output(tmp_path / "ref"))
    assert sorted(d["id"] for d in read_drops(out)) == sorted(d["id"] for d in read_drops(tmp_path / "ref"))
    # A different recipe on the same out dir is refused rather than mixed in.
    with pytest.raises(HerdError, match="different recipe"):
        run_curation(fast_config(dedup={"threshold": 0.5}), [root], out, progress=False)


def test_dedup_levels_and_jsonl_zst_output(tmp_path):
    import zstandard

    from curate_testutil import planted_docs

    docs = planted_docs()
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    cfg = fast_config(output={"format": "jsonl.zst", "docs_per_shard": 3},
                      dedup={"line_bucket_docs": 50, "line_max_occurrences": 6},
                      heuristics={"enabled": False}, pii={"blocked_domains": ["blocked.example"]})
    out = tmp_path / "out"
    r = run_curation(cfg, [src], out, progress=False)
    assert r["accounting_ok"]
    rows = []
    for f in sorted((out / "data").glob("*.jsonl.zst")):
        with zstandard.ZstdDecompressor().stream_reader(open(f, "rb")) as fh:
            rows += [json.loads(x) for x in fh.read().decode().splitlines()]
    assert len(rows) == r["kept_docs"] and len(list((out / "data").glob("*.zst"))) >= 2
    d = r["dropped"]
    assert d["url_dedup/duplicate_url"] == 1
    assert d["minhash_dedup/near_duplicate"] == 2  # two lightly edited copies
    assert d["pii/blocked_domain"] == 1
    # The boilerplate line shared by 10 documents is gone, the line shared by 3 is kept.
    texts = "\n".join(x["text"] for x in rows)
    assert "Subscribe to our newsletter" not in texts and "Shared by three" in texts
    assert "[EMAIL]" in texts and "jane.roe@example.com" not in texts


def test_quality_classifier_trains_and_scores(tmp_path):
    from herd.curate.quality import QualityScorer, train_quality
    from herd.curate.seeds import ovos_summaries

    import random

    rng = random.Random(0)
    good = [v["extract"] for v in ovos_summaries("en-us").values() if len(v["extract"].split()) > 40][:300]
    words = " ".join(good).split()
    # Low quality: spam-like word salad and keyword stuffing built from the same vocabulary.
    bad = [" ".join(rng.choice(words) for _ in range(60)) + " click here buy now free free"
           for _ in range(300)]
    (tmp_path / "good.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in good))
    (tmp_path / "bad.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in bad))
    m = train_quality([tmp_path / "good.jsonl"], [tmp_path / "bad.jsonl"], tmp_path / "q.bin", epoch=5)
    assert m["val_accuracy"] >= 0.9
    s = QualityScorer(str(tmp_path / "q.bin"))
    hq, lq = s.score(good[-20:]), s.score(bad[-20:])
    assert min(hq) >= 0.0 and max(lq) <= 1.0 and sum(hq) / 20 > sum(lq) / 20 + 0.5
    with pytest.raises(HerdError, match="quality model not found"):
        QualityScorer(str(tmp_path / "missing.bin"))


def test_cli_runs_and_reports_bad_input(fuzz_corpus, tmp_path, capsys):
    from herd.cli import main

    root, _, _ = fuzz_corpus
    recipe = tmp_path / "r.toml"
    recipe.write_text("[domain]\nenabled = false\n[mix]\nenabled = false\n[run]\nworkers = 1\n")
    rc = main(["curate", str(recipe), "--input", str(root / "records.jsonl"), "--out", str(tmp_path / "o"),
               "--set", "heuristics.min_words=10", "--quiet"])
    assert rc == 0
    assert "accounting OK" in capsys.readouterr().out
    assert main(["curate", str(recipe), "--input", str(tmp_path / "nope"), "--out",
                 str(tmp_path / "o2")]) == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("[dedup]\nthreshhold = 0.5\n")
    assert main(["curate", str(bad), "--input", str(root), "--out", str(tmp_path / "o3")]) == 2
    err = capsys.readouterr().err
    assert "unknown field dedup.threshhold (did you mean dedup.threshold?)" in err and "Traceback" not in err
    # --config, --stage.key and the shorthands land in the recipe (run.input, run.out)
    rc = main(["curate", "--config", str(recipe), "--input", str(root / "records.jsonl"), "--out",
               str(tmp_path / "o4"), "--heuristics.min_words", "10", "--quiet"])
    assert rc == 0 and "accounting OK" in capsys.readouterr().out
    with pytest.raises(HerdError, match="multiple of dedup.bands"):
        load_recipe(None, ["dedup.num_perm=100"])
