"""Fixtures for the pretraining tests: the shared token fixtures (tests/data/token_fixtures.py)
and short documents for packing."""

import pytest
from token_fixtures import byte_tok, real_text_files, text_files, tok_dir  # noqa: F401


@pytest.fixture(scope="session")
def para_tok_dir(tmp_path_factory, byte_tok, text_files):  # noqa: F811 (fixtures imported above)
    """Short documents (the speeches' sentences), so packed rows hold many documents."""
    import json

    from herd.data import tokenize_files

    root = tmp_path_factory.mktemp("para")
    with open(root / "paras.jsonl", "w") as f:
        for fn in text_files[:10]:
            for sent in open(fn, encoding="utf-8").read().split(". "):
                if sent.strip():
                    f.write(json.dumps({"text": sent.strip() + "."}) + "\n")
    tokenize_files([root / "paras.jsonl"], byte_tok, root / "data", val_fraction=0.05, workers=1,
                   progress=False)
    return root / "data"
