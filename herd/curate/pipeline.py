"""The curation pipeline of paper §3.1.1 as five resumable phases over sharded files.

  A (map, per input task)  read -> extract -> langid -> pii; MinHash signature, line hashes, URL key
                           and corpus token counts are computed here so the global phase reads no text
  B (global, one process)  URL dedup (newest per normalised URL) -> MinHash LSH over the whole
                           dataset -> line counts per bucket of N documents -> corpus token distribution
  C (map, per A shard)     line dedup -> domain label -> heuristics (incl. token KL) -> quality score
  D (global)               sampling rates per domain for the mix weights
  E (map, per C shard)     mix sampling -> final output shards (Parquet or JSONL.zst)

Every document read is counted once as input and either reaches the output or is written to a
drop side file (out/drops/*.jsonl: id, source, stage, reason); `report["accounting_ok"]` checks
kept + dropped == input. Each task writes its files atomically and then a `.done.json` marker with
its tallies, so rerunning on the same out dir after a kill skips finished tasks and never writes a
document twice. Work files live in out/work/ and are kept for resumption (delete them when done).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections import Counter, defaultdict
from functools import lru_cache
from pathlib import Path

import numpy as np

from herd.config import from_dict
from herd.curate.config import CurateConfig
from herd.curate.executor import read_marker, run_tasks
from herd.curate.report import Tally, write_report
from herd.errors import HerdError
from herd.fileio import AtomicFile, atomic_open, atomic_write_json

BATCH = 256  # documents per batch inside a map task (bounded memory)


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
class DropWriter:
    """Side file of dropped documents: one JSON line each (id, source, stage, reason)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.out = AtomicFile(path, "w", encoding="utf-8")
        self.f = self.out.file

    def add(self, doc_id: str, source: str, stage: str, reason: str) -> None:
        self.f.write(json.dumps({"id": doc_id, "source": source, "stage": stage, "reason": reason},
                                ensure_ascii=False) + "\n")

    def close(self) -> None:
        self.out.commit()


class ParquetRows:
    """Write rows (dicts) to a Parquet file in row groups, atomically (tmp file, then rename)."""

    def __init__(self, path: Path, schema):
        import pyarrow.parquet as pq

        path.parent.mkdir(parents=True, exist_ok=True)
        self.out, self.schema = AtomicFile(path), schema
        self.writer = pq.ParquetWriter(str(self.out.tmp), schema, compression="zstd")
        self.rows: list[dict] = []
        self.n = 0

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self.n += 1
        if len(self.rows) >= 1000:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows = []

    def close(self) -> None:
        self.flush()
        self.writer.close()
        self.out.commit()


def write_marker(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, content)


def config_from_dict(d: dict) -> CurateConfig:
    return from_dict(CurateConfig, d)


@lru_cache(maxsize=2)
def cached_tokenizer(spec: str):
    """One tokenizer per worker process (loading the 128K-rank Llama 3 BPE takes seconds)."""
    from herd.tokenizer.tokenizer import Tokenizer

    return Tokenizer.from_spec(spec)


def nbytes(s: str | None) -> int:
    return len(s.encode("utf-8", "surrogatepass")) if s else 0


def _schema_a():
    import pyarrow as pa

    return pa.schema([("id", pa.string()), ("source", pa.string()), ("url", pa.string()),
                      ("url_key", pa.string()), ("timestamp", pa.float64()), ("text", pa.string()),
                      ("nbytes", pa.int64()), ("language", pa.string()), ("language_score", pa.float32()),
                      ("pii_masks", pa.int32()),
                      ("sig", pa.binary()), ("line_hashes", pa.list_(pa.int64()))])


def _schema_c():
    import pyarrow as pa

    return pa.schema([("id", pa.string()), ("source", pa.string()), ("url", pa.string()),
                      ("timestamp", pa.float64()), ("text", pa.string()), ("language", pa.string()),
                      ("language_score", pa.float32()), ("domain", pa.string()), ("domain_score",
                                                                                  pa.float32()),
                      ("quality_score", pa.float32()), ("token_kl", pa.float32()),
                      ("dup_ngram_score", pa.float32()), ("dirty_word_ratio", pa.float32()),
                      ("pii_masks", pa.int32()), ("lines_removed", pa.int32())])


# --------------------------------------------------------------------------------------------
# phase A: read -> extract -> langid -> pii (+ signature, line hashes, token counts)
# --------------------------------------------------------------------------------------------
def phase_a(task_id: int, files: list[str], cfg_dict: dict, work: str) -> None:
    from herd.curate.dedup import line_hashes, minhash_signature
    from herd.curate.extract import html_to_text
    from herd.curate.pii import is_blocked, load_blocked_domains, mask_pii
    from herd.curate.readers import read_documents
    from herd.curate.urls import normalize_url

    cfg = config_from_dict(cfg_dict)
    work_p = Path(work)
    name = f"{task_id:05d}"
    rows = ParquetRows(work_p / "a" / f"{name}.parquet", _schema_a())
    drops = DropWriter(work_p / "drops" / f"a-{name}.jsonl")
    tally = Tally()
    blocked = load_blocked_domains(cfg.pii.blocked_domains, cfg.pii.blocked_domains_file)
    from herd.curate import heuristics as H

    tok, tok_counts = None, None
    if cfg.heuristics.enabled and cfg.heuristics.kl:
        tok = cached_tokenizer(cfg.heuristics.tokenizer)
        tok_counts = np.zeros(tok.n_words, dtype=np.float64)
    langid = None
    if cfg.langid.enabled:
        from herd.curate import langid

    input_docs = input_bytes = 0

    def drop(rec, stage, nb, reason):
        tally.dropped(stage, nb, reason)
        drops.add(rec["id"], rec.get("source", ""), stage, reason)

    for f in files:
        for rec in read_documents(f):
            input_docs += 1
            raw = rec.get("html") if rec.get("html") is not None else rec.get("text")
            nb = nbytes(raw)
            input_bytes += nb
            if "error" in rec:
                drop(rec, "read", 0, rec["error"])
                continue
            try:
                (raw or "").encode("utf-8")
            except UnicodeEncodeError:
                drop(rec, "read", nb, "invalid_unicode: lone surrogate in text")
                continue
            tally.passed("read", nb)
            # extract
            if rec.get("html") is not None:
                if not cfg.extract.enabled:
                    text = rec["html"]
                else:
                    try:
                        text = html_to_text(rec["html"], cfg.extract.main_content, cfg.extract.alt_texts,
                                            cfg.extract.keep_math)
                    except Exception as e:  # a parser failure on one page must not stop the run
                        drop(rec, "extract", nb, f"extract_failed: {type(e).__name__}: {str(e)[:100]}")
                        continue
            else:
                text = rec["text"].replace("\x00", "")
            if len(text.strip()) < max(cfg.extract.min_chars, 1):
                drop(rec, "extract", nb, "empty_text")
                continue
            tb = nbytes(text)
            tally.passed("extract", nb, tb)
            # language id
            lang, lscore = "", 0.0
            if langid is not None:
                lang, lscore = langid.detect_one(text, cfg.langid.max_chars)
                if cfg.langid.languages and lang not in cfg.langid.languages:
                    drop(rec, "langid", tb, f"language_not_kept: {lang}")
                    continue
                if lscore < cfg.langid.min_score:
                    drop(rec, "langid", tb, f"low_language_score: {lang} {lscore:.2f}")
                    continue
                tally.passed("langid", tb)
            # pii and blocked domains
            masks = 0
            if cfg.pii.enabled:
                if is_blocked(rec.get("url", ""), blocked):
                    drop(rec, "pii", tb, "blocked_domain")
                    continue
                p = cfg.pii
                text, counts = mask_pii(text, p.emails, p.phones, p.ips, p.cards, p.ibans)
                masks = sum(counts.values())
                tally.passed("pii", tb, nbytes(text))
            if tok_counts is not None:
                tok_counts += H.doc_token_weights(tok.encode(text), tok.n_words, cfg.heuristics.kl_doc_cap)
            d = cfg.dedup
            rows.add({
                "id": rec["id"], "source": rec.get("source", ""), "url": rec.get("url", ""),
                "url_key": normalize_url(rec.get("url", "")) if d.url else "",
                "timestamp": rec.get("timestamp"), "text": text, "nbytes": nbytes(text), "language": lang,
                "language_score": lscore,
                "pii_masks": masks,
                "sig": minhash_signature(text, d.shingle_size, d.num_perm).tobytes() if d.minhash else b"",
                "line_hashes": line_hashes(text, d.line_min_chars) if d.line else [],
            })
    rows.close()
    drops.close()
    if tok_counts is not None:
        with atomic_open(work_p / "a" / f"{name}.tok.npy", "wb") as f:
            np.save(f, tok_counts)
    write_marker(work_p / "a" / f"{name}.done.json",
                 {"input_docs": input_docs, "input_bytes": input_bytes, "kept": rows.n, **tally.to_dict()})


# --------------------------------------------------------------------------------------------
# phase B: global dedup (URL, MinHash LSH), line-bucket counts, corpus token distribution
# --------------------------------------------------------------------------------------------
def phase_b(n_tasks: int, cfg: CurateConfig, work: Path) -> dict:
    import pyarrow.parquet as pq

    from herd.curate.dedup import MinHashLSH, frequent_lines

    marker = work / "b" / "done.json"
    done = read_marker(marker)
    if done is not None:
        return done
    (work / "b").mkdir(parents=True, exist_ok=True)
    d = cfg.dedup
    tally = Tally()
    drops = DropWriter(work / "drops" / "b.jsonl")
    shards = [work / "a" / f"{t:05d}.parquet" for t in range(n_tasks)]

    # 1. URL dedup: the newest timestamp of each normalised URL wins (ties: the first seen).
    best: dict[str, tuple[float, int, int]] = {}
    if d.url:
        for t, sh in enumerate(shards):
            tab = pq.read_table(sh, columns=["url_key", "timestamp"])
            for r, (k, ts) in enumerate(zip(tab.column("url_key").to_pylist(),
                                            tab.column("timestamp").to_pylist())):
                if not k:
                    continue
                ts = float("-inf") if ts is None else ts
                if k not in best or ts > best[k][0]:
                    best[k] = (ts, t, r)
    lsh = MinHashLSH(d.num_perm, d.bands, d.threshold) if d.minhash else None
    bucket_lines: list[np.ndarray] = []
    position = 0
    current_bucket = 0
    n_buckets_frequent = 0
    buckets_dir = work / "b" / "buckets"
    buckets_dir.mkdir(exist_ok=True)

    def close_bucket(b: int) -> None:
        nonlocal bucket_lines, n_buckets_frequent
        freq = frequent_lines(bucket_lines, d.line_max_occurrences)
        n_buckets_frequent += int(freq.size)
        np.save(buckets_dir / f"{b:06d}.npy", freq)
        bucket_lines = []

    for t, sh in enumerate(shards):
        cols = (["id", "source", "url_key", "nbytes"] + (["sig"] if d.minhash else [])
                + (["line_hashes"] if d.line else []))
        tab = pq.read_table(sh, columns=cols)
        ids, sources = tab.column("id").to_pylist(), tab.column("source").to_pylist()
        keys = tab.column("url_key").to_pylist()
        sizes = tab.column("nbytes").to_pylist()  # phase B never loads the text
        sigs = tab.column("sig").to_pylist() if d.minhash else None
        lhs = tab.column("line_hashes") if d.line else None
        buckets = np.full(len(ids), -1, dtype=np.int64)
        for r in range(len(ids)):
            if d.url:
                if keys[r] and best[keys[r]][1:] != (t, r):
                    tally.dropped("url_dedup", sizes[r], "duplicate_url")
                    kt, kr = best[keys[r]][1:]
                    drops.add(ids[r], sources[r], "url_dedup", "duplicate_url: newer copy in task "
                                                               f"{kt} row {kr}")
                    continue
                tally.passed("url_dedup", sizes[r])
            if lsh is not None:
                sig = np.frombuffer(sigs[r], dtype=np.uint32)
                dup = lsh.add(position_key(t, r), sig)
                if dup is not None:
                    tally.dropped("minhash_dedup", sizes[r], "near_duplicate")
                    drops.add(ids[r], sources[r], "minhash_dedup", "near_duplicate: of "
                                                                   f"{_key_str(dup, work)}")
                    continue
                tally.passed("minhash_dedup", sizes[r])
            b = position // d.line_bucket_docs
            if b != current_bucket:
                if d.line:
                    close_bucket(current_bucket)
                current_bucket = b
            buckets[r] = b
            if d.line:
                bucket_lines.append(np.asarray(lhs[r].as_py(), dtype=np.int64))
            position += 1
        np.save(work / "b" / f"{t:05d}.buckets.npy", buckets)
    if d.line:
        close_bucket(current_bucket)
    drops.close()
    # Corpus token distribution for the KL heuristic.
    tok_files = [work / "a" / f"{t:05d}.tok.npy" for t in range(n_tasks)]
    if cfg.heuristics.enabled and cfg.heuristics.kl and all(f.exists() for f in tok_files) and tok_files:
        total = sum(np.load(f) for f in tok_files)
        np.save(work / "b" / "token_counts.npy", total)
    result = {"survivors": position, "frequent_lines": n_buckets_frequent, **tally.to_dict()}
    write_marker(marker, result)
    return result


def position_key(task: int, row: int) -> int:
    return (task << 32) | row


def _key_str(key: int, work: Path) -> str:
    return f"task {key >> 32} row {key & 0xFFFFFFFF}"


# --------------------------------------------------------------------------------------------
# phase C: line dedup -> domain -> heuristics -> quality
# --------------------------------------------------------------------------------------------
def phase_c(task_id: int, cfg_dict: dict, work: str) -> None:
    import pyarrow.parquet as pq

    from herd.curate import heuristics as H
    from herd.curate.dedup import remove_lines

    cfg = config_from_dict(cfg_dict)
    work_p = Path(work)
    name = f"{task_id:05d}"
    buckets = np.load(work_p / "b" / f"{name}.buckets.npy")
    rows = ParquetRows(work_p / "c" / f"{name}.parquet", _schema_c())
    drops = DropWriter(work_p / "drops" / f"c-{name}.jsonl")
    tally = Tally()
    hc = cfg.heuristics
    kl = None
    if hc.enabled and hc.kl and (work_p / "b" / "token_counts.npy").exists():
        kl = H.KLScorer(np.load(work_p / "b" / "token_counts.npy"), cached_tokenizer(hc.tokenizer))
    quality = None
    if cfg.quality.enabled and cfg.quality.model:
        from herd.curate.quality import cached_scorer

        quality = cached_scorer(cfg.quality.model)
    freq_cache: dict[int, set] = {}
    scores: dict[str, list] = defaultdict(list)
    domain_counts: Counter = Counter()

    def frequent(b: int) -> set:
        if b not in freq_cache:
            freq_cache.clear()  # buckets are visited in order: keep one in memory
            p = work_p / "b" / "buckets" / f"{b:06d}.npy"
            freq_cache[b] = set(np.load(p).tolist()) if p.exists() else set()
        return freq_cache[b]

    pf = pq.ParquetFile(work_p / "a" / f"{name}.parquet")
    cols = ["id", "source", "url", "timestamp", "text", "language", "language_score", "pii_masks"]
    row_index = 0
    for batch in pf.iter_batches(batch_size=BATCH, columns=cols):
        docs = []
        for rec in batch.to_pylist():
            b = int(buckets[row_index])
            row_index += 1
            if b < 0:
                continue  # dropped by URL/MinHash dedup in phase B (already recorded there)
            nb = nbytes(rec["text"])
            removed = 0
            if cfg.dedup.line:
                text, removed = remove_lines(rec["text"], frequent(b), cfg.dedup.line_min_chars)
                if not text.strip():
                    tally.dropped("line_dedup", nb, "empty_after_line_dedup")
                    drops.add(rec["id"], rec["source"], "line_dedup", "empty_after_line_dedup")
                    continue
                rec["text"] = text
                tally.passed("line_dedup", nb, nbytes(text))
            rec["lines_removed"] = removed
            docs.append(rec)
        if not docs:
            continue
        # domain labels (batched: the embedding model is the costliest step)
        if cfg.domain.enabled:
            from herd.curate.domain import label_domains

            labels, dprobs = label_domains([r["text"] for r in docs],
                                           [r["language"] for r in docs], cfg.domain)
            for r, lab, p in zip(docs, labels, dprobs):
                r["domain"], r["domain_score"] = lab, p
                tally.passed("domain", nbytes(r["text"]))
        else:
            for r in docs:
                r["domain"], r["domain_score"] = "general", None
        kept = []
        for r in docs:
            nb = nbytes(r["text"])
            r["token_kl"] = r["dup_ngram_score"] = r["dirty_word_ratio"] = None
            if hc.enabled:
                reason, vals = H.check(r["text"], hc, r["language"], r["domain"], kl)
                r["token_kl"] = vals.get("kl")
                r["dup_ngram_score"] = vals.get("dup_5gram_char_frac")
                r["dirty_word_ratio"] = vals.get("dirty_word_ratio")
                for k in ("kl", "dup_5gram_char_frac", "dirty_word_ratio", "dup_line_frac", "n_words"):
                    if k in vals:
                        scores[k].append(float(vals[k]))
                if reason is not None:
                    tally.dropped("heuristics", nb, reason)
                    drops.add(r["id"], r["source"], "heuristics", reason)
                    continue
                tally.passed("heuristics", nb)
            kept.append(r)
        if quality is not None and kept:
            qs = quality.score([r["text"] for r in kept])
        else:
            qs = [None] * len(kept)
        for r, q in zip(kept, qs):
            r["quality_score"] = q
            nb = nbytes(r["text"])
            if q is not None:
                scores["quality_score"].append(q)
                if q < cfg.quality.min_score:
                    tally.dropped("quality", nb, "low_quality")
                    drops.add(r["id"], r["source"], "quality", f"low_quality: {q:.3f}")
                    continue
                tally.passed("quality", nb)
            scores["language_score"].append(float(r["language_score"] or 0.0))
            domain_counts[r["domain"]] += 1
            rows.add({k: r.get(k) for k in _schema_c().names})
    rows.close()
    drops.close()
    np.savez(work_p / "c" / f"{name}.scores.npz",
             **{k: np.asarray(v, dtype=np.float32) for k, v in scores.items()})
    write_marker(work_p / "c" / f"{name}.done.json", {"kept": rows.n, "domains": dict(domain_counts),
                                                     **tally.to_dict()})


# --------------------------------------------------------------------------------------------
# phase D + E: mix sampling to domain weights, final output
# --------------------------------------------------------------------------------------------
def mix_rates(counts: dict[str, int], weights: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """Sampling rate per domain so the kept mix matches the weights renormalised over the domains
    present, taking as many documents as possible without repeating any (the scarcest domain,
    relative to its weight, is kept whole). Returns (rates, effective target weights)."""
    present = {k: float(w) for k, w in weights.items() if counts.get(k, 0) > 0 and float(w) > 0}
    if not present:
        return {k: 0.0 for k in counts}, {}
    z = sum(present.values())
    target = {k: w / z for k, w in present.items()}
    total = min(counts[k] / target[k] for k in target)
    rates = {k: (total * target[k] / counts[k]) if k in target else 0.0 for k in counts}
    return {k: min(1.0, r) for k, r in rates.items()}, target


def _uniform(key: str, seed: int) -> float:
    h = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2.0 ** 64


def _mix_key(r: dict) -> str:
    """What the mix's sampling hashes: the document's text, so that the same input gives the same
    sample wherever its files lie (a document id holds the input file's path)."""
    return r["text"]


def phase_e(task_id: int, cfg_dict: dict, rates: dict | None, work: str, out: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cfg = config_from_dict(cfg_dict)
    work_p, out_p = Path(work), Path(out)
    name = f"{task_id:05d}"
    drops = DropWriter(work_p / "drops" / f"e-{name}.jsonl")
    tally = Tally()
    pf = pq.ParquetFile(work_p / "c" / f"{name}.parquet")
    (out_p / "data").mkdir(parents=True, exist_ok=True)
    part, written, buf, files = 0, 0, [], []
    kept_domains: Counter = Counter()

    def flush():
        nonlocal part, buf
        if not buf:
            return
        table = pa.Table.from_pylist(buf, schema=_schema_c())
        if cfg.output.format == "parquet":
            path = out_p / "data" / f"part-{name}-{part:03d}.parquet"
            with AtomicFile(path) as a:
                pq.write_table(table, a.tmp, compression="zstd")
        else:
            import zstandard

            path = out_p / "data" / f"part-{name}-{part:03d}.jsonl.zst"
            with atomic_open(path, "wb") as fh, zstandard.ZstdCompressor(level=3).stream_writer(fh) as w:
                for row in buf:
                    w.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
        files.append(path.name)
        part += 1
        buf = []

    for batch in pf.iter_batches(batch_size=BATCH):
        for r in batch.to_pylist():
            nb = nbytes(r["text"])
            if rates is not None:
                rate = rates.get(r["domain"], 0.0)
                if _uniform(_mix_key(r), cfg.mix.seed) >= rate:
                    tally.dropped("mix", nb, "mix_downsample")
                    drops.add(r["id"], r["source"], "mix", f"mix_downsample: {r['domain']} rate {rate:.3f}")
                    continue
                tally.passed("mix", nb)
            buf.append(r)
            written += 1
            kept_domains[r["domain"]] += 1
            if len(buf) >= cfg.output.docs_per_shard:
                flush()
    flush()
    drops.close()
    write_marker(work_p / "e" / f"{name}.done.json", {"kept": written, "files": files,
                                                     "domains": dict(kept_domains), **tally.to_dict()})


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------
def run_curation(config: CurateConfig, inputs, out_dir, executor: str | None = None,
                 ray_address: str | None = None, workers: int | None = None, progress: bool = True) -> dict:
    """Run the recipe on the inputs into out_dir; return (and write) the report."""
    from herd.curate.readers import expand_inputs, plan_tasks

    t0 = time.time()
    cfg = dataclasses.replace(config)
    if executor:
        cfg.run.executor = executor
    if ray_address:
        cfg.run.ray_address = ray_address
    if workers:
        cfg.run.workers = workers
    cfg.validate()
    if cfg.quality.enabled and cfg.quality.model:
        from herd.curate.quality import QualityScorer

        QualityScorer(cfg.quality.model)  # fail now, not in every worker
    if cfg.pii.enabled:
        from herd.curate.pii import load_blocked_domains

        load_blocked_domains(cfg.pii.blocked_domains, cfg.pii.blocked_domains_file)
    inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    files = expand_inputs(inputs)
    tasks = plan_tasks(files, cfg.run.html_files_per_task)
    out = Path(out_dir)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    cfg_dict = cfg.to_dict()
    # Resuming must be the same run: same recipe (execution settings aside) and the same inputs.
    ident = {k: v for k, v in cfg_dict.items() if k != "run"}
    ident_json = json.dumps({"config": ident, "tasks": tasks}, sort_keys=True)
    ident_path = work / "run.json"
    if ident_path.exists():
        if ident_path.read_text() != ident_json:
            raise HerdError(f"{out} holds a run with a different recipe or inputs: use a new --out directory "
                            f"(or delete {out}) to start over")
    else:
        ident_path.write_text(ident_json)
    run = dict(executor=cfg.run.executor, workers=cfg.run.workers, ray_address=cfg.run.ray_address,
               progress=progress)
    timings = {}

    t = time.time()
    a_markers = run_tasks(phase_a, [(i, fs, cfg_dict, str(work)) for i, fs in enumerate(tasks)],
                          [work / "a" / f"{i:05d}.done.json" for i in range(len(tasks))],
                          desc="curate A extract", **run)
    timings["A_extract_langid_pii"] = time.time() - t
    t = time.time()
    b = phase_b(len(tasks), cfg, work)
    timings["B_global_dedup"] = time.time() - t
    t = time.time()
    c_markers = run_tasks(phase_c, [(i, cfg_dict, str(work)) for i in range(len(tasks))],
                          [work / "c" / f"{i:05d}.done.json" for i in range(len(tasks))],
                          desc="curate C filter", **run)
    timings["C_filter_score"] = time.time() - t
    domain_counts: Counter = Counter()
    for m in c_markers:
        domain_counts.update(m["domains"])
    rates, target = (mix_rates(dict(domain_counts), cfg.mix.weights) if cfg.mix.enabled else (None, {}))
    t = time.time()
    e_markers = run_tasks(phase_e, [(i, cfg_dict, rates, str(work), str(out)) for i in range(len(tasks))],
                          [work / "e" / f"{i:05d}.done.json" for i in range(len(tasks))],
                          desc="curate E mix", **run)
    timings["E_mix_write"] = time.time() - t

    report = write_report(cfg, out, work, files, a_markers, b, c_markers, e_markers, rates, target, timings,
                          time.time() - t0)
    return report
