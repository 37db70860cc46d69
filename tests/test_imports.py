"""House rule: no import circles among herd's modules at import time.

The graph is built from the import statements of every module under herd/ (parsed, not run) by
scripts/import_cycles.py; run that script to see the cycles, including the ones through imports
inside functions (`python scripts/import_cycles.py`)."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "import_cycles.py"


def _finder():
    spec = importlib.util.spec_from_file_location("import_cycles", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_no_import_cycles_at_import_time():
    ic = _finder()
    top, _ = ic.graph(ic.modules())
    assert "herd.cli" in top and "herd.checkpoint.common" in top  # the graph covers the package
    cycles = ic.cycles(top)
    assert not cycles, ("import cycles among herd's modules: "
                        + "; ".join(" -> ".join(c + [c[0]]) for c in cycles))


def test_finder_sees_cycles():
    ic = _finder()
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert ic.cycles(edges) == [["a", "b", "c"]]
