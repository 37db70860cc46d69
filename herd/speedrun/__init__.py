"""`herd speedrun`: the whole Llama 3 recipe in miniature (paper §3.1 data, §3.2 tokenizer and
scaling laws, §3.4 pretraining, §4 post-training, §5 evaluation) on real text, ending with a
report card.

    from herd.speedrun import preset, run_speedrun
    cfg = preset("quick")            # or "cpu", "gpu"; preset(name, field=value) overrides
    cfg.out = "speedrun-quick"
    rep = run_speedrun(cfg)          # -> {"report_md", "report_html", "chat", "skipped"}

Stages and their completion markers: herd/speedrun/run.py. Presets: herd/speedrun/config.py.
Corpus sources: herd/speedrun/corpus.py. Report: herd/speedrun/report.py.
"""

from herd.speedrun.config import SpeedrunConfig, preset


def run_speedrun(cfg, log=print):
    from herd.speedrun.run import run_speedrun as _run

    return _run(cfg, log=log)


__all__ = ["SpeedrunConfig", "preset", "run_speedrun"]
