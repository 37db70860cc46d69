"""Docs as tests: every ```bash block of README.md and docs/*.md runs, against tiny data and a tiny
model, and exits 0. The convention (skip / slow / setup / sub) is in tests/cli/doc_blocks.py and
docs/contributing.md; new docs pages are picked up automatically."""

import os
import shutil
import subprocess
import sys

import pytest
from doc_blocks import ROOT, blocks, build_workspace, directives, make_bin, script, setup

BLOCKS = blocks()


def _params():
    out = []
    for bid, text in BLOCKS:
        d = directives(text)
        marks = []
        if d["skip"]:
            marks.append(pytest.mark.skip(reason=text.strip().splitlines()[0]))
        elif d["slow"]:
            marks.append(pytest.mark.slow)
        out.append(pytest.param(bid, text, id=bid, marks=marks))
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("docs")
    build_workspace(base / "ws", base / "store")
    make_bin(base, sys.executable)
    return base


def test_blocks_found():
    names = {b.split(":")[0] for b, _ in BLOCKS}
    assert "README.md" in names and "docs/pretraining.md" in names
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("bid,text", _params())
def test_doc_block_runs(bid, text, tiny, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(tiny / "ws", ws)
    setup(ws, tiny / "store", directives(text)["setup"])
    env = dict(os.environ, PATH=f"{tiny / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=str(ROOT), HERD_DOC_TEST="1", TQDM_DISABLE="1", OMP_NUM_THREADS="1")
    body = script(text)
    r = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", body], cwd=ws, env=env, capture_output=True,
                       text=True, timeout=600, stdin=subprocess.DEVNULL, check=False)
    assert r.returncode == 0, f"{bid}: exit {r.returncode}\n--- script\n{body}--- stderr\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr, f"{bid}:\n{r.stderr[-3000:]}"
