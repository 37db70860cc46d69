"""The speedrun's report card (nanochat-style): report.md and a self-contained report.html (images
embedded as base64) from the stages' outputs: times of each stage, the curation funnel, the
IsoFLOP parabolas and power laws, predicted against actual flagship loss, loss curves, the
evaluation table, post-training accuracy and sample generations. Stages that were skipped are
listed with the reason; nothing is filled in for them."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path


class Doc:
    """Blocks rendered both as Markdown and as HTML."""

    def __init__(self):
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str):
        self.blocks.append(("h", level, text))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def pre(self, text: str):
        self.blocks.append(("pre", text))

    def table(self, headers: list[str], rows: list[list]):
        self.blocks.append(("table", headers, [[_fmt(v) for v in r] for r in rows]))

    def img(self, path, alt: str):
        if path and Path(path).is_file():
            self.blocks.append(("img", str(path), alt))

    def markdown(self, base: Path) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2])
            elif b[0] == "p":
                out.append(b[1])
            elif b[0] == "pre":
                out.append("```\n" + b[1] + "\n```")
            elif b[0] == "table":
                out.append(
                    "| "
                    + " | ".join(b[1])
                    + " |\n|"
                    + "---|" * len(b[1])
                    + "\n"
                    + "\n".join(
                        "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in r) + " |"
                        for r in b[2]
                    )
                )
            elif b[0] == "img":
                try:
                    rel = Path(b[1]).resolve().relative_to(base.resolve())
                except ValueError:
                    rel = Path(b[1])
                out.append(f"![{b[2]}]({rel.as_posix()})")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        e = html.escape
        out = [
            f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>"
            "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
            "text-align:left;vertical-align:top}th{background:#f3f3f3}pre{background:#f6f6f6;padding:1em;"
            "overflow-x:auto;white-space:pre-wrap}img{max-width:100%}</style></head><body>"
        ]
        for b in self.blocks:
            if b[0] == "h":
                out.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                out.append(f"<p>{_inline(b[1])}</p>")
            elif b[0] == "pre":
                out.append(f"<pre>{e(b[1])}</pre>")
            elif b[0] == "table":
                out.append(
                    "<table><tr>"
                    + "".join(f"<th>{e(h)}</th>" for h in b[1])
                    + "</tr>"
                    + "".join(
                        "<tr>" + "".join(f"<td>{_inline(str(c))}</td>" for c in r) + "</tr>" for r in b[2]
                    )
                    + "</table>"
                )
            elif b[0] == "img":
                data = base64.b64encode(Path(b[1]).read_bytes()).decode()
                out.append(f"<p><img alt='{e(b[2])}' src='data:image/png;base64,{data}'></p>")
        out.append("</body></html>")
        return "\n".join(out)


def _inline(text: str) -> str:
    """Escape, then render `code` spans (the only inline Markdown the report uses)."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts)).replace("\n", "<br>")


def _fmt(v) -> str:
    if isinstance(v, float):
        if v != v:
            return "n/a"
        if abs(v) >= 1e5 or (0 < abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.4f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return "" if v is None else str(v)


def _metrics(path) -> list[dict]:
    p = Path(path) if path else None
    if not p or not p.is_file():
        return []
    rows = []
    for line in p.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def plot_loss_curves(ctx, path: Path) -> Path | None:
    runs = {
        n: ctx.outputs[f"pretrain_{n}"]
        for n in ("small", "medium", "flagship")
        if f"pretrain_{n}" in ctx.outputs
    }
    if not runs:
        return None
    from herd.scaling.plot import _plt, _save

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for i, (name, r) in enumerate(runs.items()):
        rows = _metrics(r.get("metrics"))
        tr = [(m["tokens"], m["loss"]) for m in rows if m.get("kind") == "train" and "loss" in m]
        va = [(m["tokens"], m.get("loss", m.get("val_loss"))) for m in rows if m.get("kind") == "val"]
        if tr:
            ax.plot(
                *zip(*tr), color=f"C{i}", alpha=0.6, lw=1, label=f"{name} train ({r['n_params']:,} params)"
            )
        va = [(t, v) for t, v in va if v is not None]
        if va:
            ax.plot(*zip(*va), color=f"C{i}", marker="o", ms=3, lw=1.5, label=f"{name} validation")
        if r.get("anneal_steps"):
            ax.axvline(r["main_steps"] * ctx.cfg.batch_size * ctx.cfg.seq_len, color=f"C{i}", ls=":", lw=0.8)
    if "pretrain_flagship" in ctx.outputs and ctx.outputs["pretrain_flagship"].get("predicted_loss"):
        ax.axhline(
            ctx.outputs["pretrain_flagship"]["predicted_loss"],
            color="k",
            ls="--",
            lw=0.8,
            label="scaling-law prediction (flagship)",
        )
    ax.set_xlabel("tokens")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("Pretraining the herd (dotted: annealing starts)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_funnel(ctx, path: Path) -> Path | None:
    cur = ctx.outputs.get("curate")
    if not cur:
        return None
    from herd.scaling.plot import _plt, _save

    plt = _plt()
    funnel = cur["funnel"]
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    names = [f["stage"] for f in funnel]
    ax.bar(names, [f["bytes_out"] / 1e6 for f in funnel], color="C0", label="MB kept")
    ax.set_ylabel("MB after the stage")
    ax2 = ax.twinx()
    ax2.plot(names, [f["docs_out"] for f in funnel], color="C3", marker="o", label="documents")
    ax2.set_ylabel("documents")
    ax.set_title("Curation funnel (§3.1)")
    ax.tick_params(axis="x", rotation=40)
    return _save(fig, path)


def write_report(ctx, stages: list[str]) -> dict:
    """report.md and report.html of a run: `ctx` its Context (outputs, skip reasons, times), `stages`
    the names of its stages in run order (those of herd.speedrun.run.STAGES)."""
    out: Path = ctx.out
    rdir = out / "report"
    rdir.mkdir(parents=True, exist_ok=True)
    c = ctx.cfg
    o = ctx.outputs
    d = Doc()
    d.h(1, f"herd speedrun report card ({c.preset} preset)")
    total = sum(v for k, v in ctx.seconds.items() if not k.startswith("_"))
    import torch

    dev = (
        torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    chash = (getattr(ctx, "machine", None) or {}).get("config_hash") or c.hash()
    d.p(
        "The Llama 3 recipe in miniature: curated real text, a trained tokenizer, an IsoFLOP sweep that "
        "sizes the flagship, a herd of three models pretrained with annealing and checkpoint averaging, "
        f"post-training on a verifiable task, and evaluation. Device: {dev}, torch {torch.__version__}. "
        f"Config hash `{chash}`. Total stage time {total / 60:.1f} min."
    )

    m = getattr(ctx, "machine", None) or {}
    if m:
        d.p(
            f"Sized to this machine: compute scale x{m['scale']:.2f} ({m['reason']}); IsoFLOP budgets "
            f"{', '.join(f'{b:.3g}' for b in m['budgets_used'])} FLOPs and flagship budget "
            f"{m['flagship_flops_used']:.3g} FLOPs (preset: {', '.join(f'{b:.3g}' for b in m['budgets'])} "
            f"and {m['flagship_flops']:.3g}); the models this gave are in the sections below."
        )

    d.h(2, "Stages and times")
    rows = []
    for name in stages:
        if name in o:
            rows.append([name, "done", f"{ctx.seconds.get(name, 0):.1f} s"])
        else:
            rows.append([name, "skipped: " + ctx.skipped.get(name, "not run"), ""])
    d.table(["stage", "status", "time"], rows)

    if "corpus" in o:
        d.h(2, "Data (§3.1)")
        d.table(
            ["source", "documents", "characters"],
            [[k, v["docs"], v["chars"]] for k, v in o["corpus"]["sources"].items()],
        )
    if "curate" in o:
        cur = o["curate"]
        d.p(
            f"Curation kept {cur['kept_docs']:,} of {cur['input_docs']:,} documents. Quality classifier: "
            f"{cur['quality_classifier']}."
        )
        d.table(
            ["stage", "docs in", "docs out", "MB in", "MB out"],
            [
                [f["stage"], f["docs_in"], f["docs_out"], f["bytes_in"] / 1e6, f["bytes_out"] / 1e6]
                for f in cur["funnel"]
            ],
        )
        d.img(plot_funnel(ctx, rdir / "funnel.png"), "curation funnel")
        if cur["dropped"]:
            d.table(["dropped by", "documents"], sorted(cur["dropped"].items(), key=lambda kv: -kv[1]))
        mix = cur.get("mix") or {}
        if mix.get("realised"):
            d.table(
                ["domain", "target share", "realised share"],
                [[k, mix.get("target", {}).get(k, float("nan")), v] for k, v in mix["realised"].items()],
            )
    if "tokenizer" in o:
        t = o["tokenizer"]
        d.p(
            f"Tokenizer: byte-level BPE trained on the curated text, {t['vocab_size']:,} ids (256 special), "
            f"{t['bytes_per_token']:.2f} bytes per token."
        )
    if "tokenize" in o:
        t = o["tokenize"]
        d.p(
            f"Tokens: {t['main_tokens']:,} for training, {t.get('heldout_tokens', 0):,} held out "
            f"({t['heldout_docs']} of {t['pieces']} text pieces); high-quality anneal mix (code + math) "
            f"{t.get('hq_tokens', 0):,} tokens."
        )

    if "isoflop" in o:
        iso = o["isoflop"]
        from herd.scaling.fit import ScalingFit

        fit = ScalingFit.load(iso["fit"])
        d.h(2, "Scaling laws (§3.2.1)")
        d.p(
            f"Convention: {fit.convention}. Each budget's runs: cosine schedule with warmup, decay to "
            "0.1x peak."
        )
        d.table(
            [
                "budget (FLOPs)",
                "N* (params)",
                "D* (tokens)",
                "L* (nats)",
                "parabola rms residual",
                "max |residual|",
                "status",
            ],
            [
                [
                    pn.budget,
                    pn.opt,
                    pd.opt,
                    pn.loss_opt,
                    pn.rms_residual,
                    pn.max_abs_residual,
                    f"{pn.status}/{pd.status}",
                ]
                for pn, pd in zip(fit.parabolas_n, fit.parabolas_d)
            ],
        )
        d.pre(
            f"N*(C) = {fit.n_opt.A:.4g} * C^{fit.n_opt.alpha:.4f}  (R² {fit.n_opt.r2:.4f})\n"
            f"D*(C) = {fit.d_opt.A:.4g} * C^{fit.d_opt.alpha:.4f}  (R² {fit.d_opt.r2:.4f})\n"
            f"L*(C) = {fit.loss_opt.A:.4g} * C^{fit.loss_opt.alpha:.5f}  (R² {fit.loss_opt.r2:.4f})\n"
            f"paper (tokens): D*(C) = 0.29 * C^0.53"
        )
        for note in iso.get("notes", []):
            d.p(f"Note: {note}")
        d.img(iso["plots"]["isoflop_params"], "IsoFLOP curves against model size")
        d.img(iso["plots"]["isoflop_tokens"], "IsoFLOP curves against tokens")
        d.img(iso["plots"]["power_laws"], "power-law fits")
        pred = iso["prediction"]
        d.p(
            f"Prediction for the flagship budget C = {pred['flops']:.3g} FLOPs "
            f"({pred['extrapolation']:.3g}x the largest sweep budget): N* = {pred['n_params']:,.0f} "
            f"non-embedding parameters (built: {iso['flagship_n_params']:,}), D* = {pred['tokens']:,.0f} "
            f"tokens, loss {pred['loss']:.4f}."
        )

    herd = {n: o[f"pretrain_{n}"] for n in ("small", "medium", "flagship") if f"pretrain_{n}" in o}
    ev = o.get("evaluate", {}).get("models", {})
    if herd:
        d.h(2, "The herd (§3.4)")
        d.table(
            [
                "model",
                "non-emb. params",
                "total params",
                "shape (dim x layers)",
                "tokens",
                "steps (+anneal)",
                "held-out loss",
                "bits per byte",
                "Polyak-averaged",
                "time",
            ],
            [
                [
                    n,
                    r["n_params"],
                    r["total_params"],
                    f"{r['model']['dim']} x {r['model']['n_layers']}",
                    r["tokens"],
                    f"{r['main_steps']} + {r['anneal_steps']}",
                    r["heldout_loss"],
                    ev.get(n, {}).get("bits_per_byte"),
                    r.get("polyak_averaged"),
                    f"{ctx.seconds.get('pretrain_' + n, 0):.0f} s",
                ]
                for n, r in herd.items()
            ],
        )
        for n, r in herd.items():
            if r.get("same_as"):
                d.p(
                    f"Note: {n} has the same shape as {r['same_as']} (the fitted N* lies at the smallest "
                    "shape of the size family for this vocabulary), so it was trained once."
                )
        if "flagship" in herd and herd["flagship"].get("predicted_loss"):
            f = herd["flagship"]
            d.p(
                f"**Flagship: predicted loss {f['predicted_loss']:.4f}, actual held-out loss "
                f"{f['heldout_loss']:.4f}, relative error {100 * f['relative_error']:+.2f}%.** (The "
                "prediction is the IsoFLOP fit's compute-optimal loss; the flagship also had the annealing "
                "phase and checkpoint averaging.)"
            )
        d.img(plot_loss_curves(ctx, rdir / "loss_curves.png"), "loss curves")

    if "evaluate" in o and o["evaluate"].get("task_accuracy"):
        acc = o["evaluate"]["task_accuracy"]
        d.h(2, "Post-training (§4) on the verifiable arithmetic task")
        d.p(f"Greedy exact-answer accuracy on {o['evaluate']['task_test_problems']} held-out problems.")
        d.table(["stage", "accuracy"], [[k, v] for k, v in acc.items()])
        if "posttrain_rs" in o:
            rs = o["posttrain_rs"]["rejection_sampling"]
            d.p(
                f"Rejection sampling: pass@1 {rs.get('pass@1', float('nan')):.3f}, pass@{c.rs_k} "
                f"{rs.get('pass@k', float('nan')):.3f}, {rs.get('kept_for_sft', 0)} samples kept for SFT."
            )
        if "posttrain_dpo" in o and o["posttrain_dpo"].get("sampling"):
            sp = o["posttrain_dpo"]["sampling"]
            d.p(
                f"DPO: {sp.get('pairs', 0)} (correct, wrong) pairs sampled from the RS model on "
                f"{c.dpo_prompts} other train prompts (pass@1 {sp.get('pass@1', float('nan')):.3f}), "
                f"{c.dpo_steps} steps x {c.dpo_batch} at LR {c.dpo_lr:g}."
            )
    if ev:
        d.h(2, "Evaluation (§5)")
        d.table(["model", "held-out bits per byte"], [[n, r["bits_per_byte"]] for n, r in ev.items()])
        he = o["evaluate"].get("humaneval")
        if he:
            d.p(
                f"HumanEval ({he['model']}): "
                + (
                    f"pass@1 {he['pass@1']:.3f} on {he['n']} problems"
                    if "pass@1" in he
                    else f"skipped: {he['skipped']}"
                )
            )
        d.h(2, "Samples (temperature 0.8, top-p 0.95)")
        for n, r in ev.items():
            d.h(3, n)
            d.pre("\n\n".join(f">>> {s['prompt']}\n{s['completion']}" for s in r["samples"]))

    chat = next(
        (
            o[k]["model_dir"]
            for k in ("posttrain_dpo", "posttrain_rs", "posttrain_sft", "pretrain_flagship")
            if k in o
        ),
        None,
    )
    if chat:
        d.h(2, "Try it")
        d.pre(f"herd chat {chat}")
    if ctx.skipped:
        d.h(2, "Skipped stages")
        d.table(["stage", "reason"], [[k, v] for k, v in ctx.skipped.items()])

    md = out / "report.md"
    md.write_text(d.markdown(out))
    page = out / "report.html"
    page.write_text(d.html(f"herd speedrun ({c.preset})"))
    return {"report_md": str(md), "report_html": str(page), "chat": chat, "skipped": dict(ctx.skipped)}
