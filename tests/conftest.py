"""Shared test setup: deterministic, single-threaded-friendly torch; skip GPU tests without a GPU."""

import os
import sys

import pytest
import torch

torch.manual_seed(0)
os.environ.setdefault("TIKTOKEN_CACHE_DIR", "")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Test folders share helper modules by plain import (tests/<stage>/*_util.py); with
# --import-mode=importlib pytest does not put the folders on sys.path, so we do.
_HERE = os.path.dirname(os.path.abspath(__file__))
for _d in sorted(os.listdir(_HERE)):
    if os.path.isdir(os.path.join(_HERE, _d)) and not _d.startswith(("_", ".")):
        sys.path.insert(0, os.path.join(_HERE, _d))

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
