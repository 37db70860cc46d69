"""`herd eval` end to end on a small checkpoint (CPU, --limit): results JSON, table with CIs,
--completions, --resume and clear errors."""

import json

import pytest

from herd.cli import main
from herd.eval.report import ci95, format_table

GSM8K = "/work/shared/data/gsm8k/test.jsonl"


def test_ci95():
    assert ci95(0.5, 100) == pytest.approx(1.96 * 0.05)
    assert ci95(1.0, 164) == 0.0
    t = format_table([{"task": "gsm8k", "metric": "acc", "score": 0.5, "n": 100, "ci95": ci95(0.5, 100)}])
    assert "0.5000" in t and "± 0.0980" in t


def test_eval_run_on_checkpoint(tiny_ckpt, tmp_path, capsys, tokenizer):
    import os

    mc = tmp_path / "mc.jsonl"
    mc.write_text(
        "".join(
            json.dumps({"question": f"Question {i}?", "choices": ["a", "b", "c", "d"], "answer": i % 4})
            + "\n"
            for i in range(6)
        )
    )
    text = tmp_path / "held_out.txt"
    text.write_text("Some held-out text to score. " * 5)
    from herd.data.tokenize import tokenize_files

    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"text": "Question 1? a b c d and other training text " * 20}) + "\n")
    tokenize_files([train], tokenizer, tmp_path / "tokens", val_fraction=0.0, workers=1, progress=False)
    out = tmp_path / "results.json"
    tasks = ["humaneval", "mc", "ppl", "memorization"] + (["gsm8k"] if os.path.isfile(GSM8K) else [])
    rc = main(
        [
            "eval",
            str(tiny_ckpt),
            "--task",
            *tasks,
            "--limit",
            "2",
            "--max-new-tokens",
            "8",
            "--gsm8k",
            GSM8K,
            "--mc",
            str(mc),
            "--text",
            str(text),
            "--train-data",
            str(tmp_path / "tokens"),
            "--contamination-threshold",
            "0.5",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert set(res["tasks"]) == set(tasks)
    assert res["tasks"]["humaneval"]["n_problems"] == 2 and "pass@1" in res["tasks"]["humaneval"]
    assert res["tasks"]["mc"]["n"] == 2
    assert res["tasks"]["ppl"]["bits_per_byte"] > 0
    assert res["tasks"]["memorization"]["n"] == 2
    assert res["tasks"]["mc"]["contamination"]["threshold"] == 0.5
    rows = {(r["task"], r["metric"]) for r in res["table"]}
    assert ("humaneval", "pass@1") in rows and ("ppl", "bits per byte") in rows
    assert "95% CI" in printed and "humaneval" in printed and "±" in printed
    # the robustness study from the command line
    rob = tmp_path / "rob.json"
    assert (
        main(
            [
                "eval",
                str(tiny_ckpt),
                "--task",
                "mc-robustness",
                "--mc",
                str(mc),
                "--mc-shots",
                str(mc),
                "--mc-n-shot",
                "2",
                "--out",
                str(rob),
            ]
        )
        == 0
    )
    r = json.loads(rob.read_text())["tasks"]["mc-robustness"]
    assert len(r["label_sets"]) == 5 and len(r["permutations"]) == 4 and len(r["label_bias"]) == 4
    # --resume keeps what is done
    rc = main(["eval", str(tiny_ckpt), "--task", "ppl", "--text", str(text), "--out", str(out), "--resume"])
    assert rc == 0 and "skipped" in capsys.readouterr().out


def test_completions_without_model(tmp_path, capsys):
    from herd.eval.humaneval import load_problems

    probs = load_problems(limit=3)
    f = tmp_path / "samples.jsonl"
    f.write_text(
        "".join(
            json.dumps({"task_id": p["task_id"], "completion": c}) + "\n"
            for p in probs
            for c in (p["canonical_solution"], "    return None\n")
        )
    )
    out = tmp_path / "r.json"
    assert (
        main(["eval", "--task", "humaneval", "--completions", str(f), "--k", "1", "2", "--out", str(out)])
        == 0
    )
    res = json.loads(out.read_text())["tasks"]["humaneval"]
    assert res["pass@1"] == 0.5 and res["pass@2"] == 1.0 and res["n_samples"] == 6


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["eval", "/no/such/ckpt", "--task", "ppl", "--text", "x.txt"], "not found"),
        (["eval", "--task", "gsm8k"], "--gsm8k"),
        (["eval", "--task", "ppl", "--text", "a.txt"], "checkpoint"),
        (["eval", "--task", "nonsense"], "unknown task"),
        (["eval", "--task", "humaneval", "--completions", "/no/file.jsonl"], "not found"),
    ],
)
def test_errors_are_one_line(argv, msg, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("herd: error:") and msg in err and "Traceback" not in err
