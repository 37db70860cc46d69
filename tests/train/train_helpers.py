"""Helpers for the pretraining tests: a tiny model config on the byte-level test data."""


TINY = ["--model.preset", "herd-5m", "--model.dim", "64", "--model.n_layers", "2", "--model.n_heads", "4",
        "--model.n_kv_heads", "2", "--model.vocab_size", "512", "--model.multiple_of", "32",
        "--optim.lr", "3e-3", "--schedule.warmup_steps", "4", "--schedule.final_lr", "3e-4",
        "--stages.0.batch_size", "4", "--stages.0.seq_len", "64", "--eval.interval", "0",
        "--eval.batches", "2", "--eval.batch_size", "4", "--checkpoint.interval", "0",
        "--run.progress", "false", "--run.log_interval", "0", "--run.threads", "1",
        "--run.peak_flops", "1e11"]


def tiny_config(tok_dir, out_dir, *extra):
    """A ~100K-parameter model on the byte-level data: a few ms per step."""
    from herd.train import Source, load_config

    cfg = load_config(None, TINY + ["--run.out", str(out_dir)] + [str(x) for x in extra])
    cfg.data.sources = [Source(path=str(tok_dir), weight=1.0)]
    return cfg


def tiny_toml(tok_dir, out_dir, path, *extra) -> str:
    """The same tiny config written as a TOML file (for subprocess runs)."""
    cfg = tiny_config(tok_dir, out_dir, *extra)
    d = cfg.to_dict()
    lines = []
    for sec, val in d.items():
        if isinstance(val, list):
            for item in val:
                lines.append(f"[[{sec}]]")
                lines += [f"{k} = {_toml(v)}" for k, v in item.items()]
        else:
            lines.append(f"[{sec}]")
            for k, v in val.items():
                if sec == "model" and k == "overrides":
                    lines += [f"{kk} = {_toml(vv)}" for kk, vv in v.items()]
                else:
                    lines.append(f"{k} = {_toml(v)}")
    text = "\n".join(lines) + "\n"
    open(path, "w").write(text)
    return str(path)


def _toml(v):
    import json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + "}"
    if v is None:
        return '""'
    return json.dumps(v)
