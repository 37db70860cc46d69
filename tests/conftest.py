"""Shared test setup: deterministic, single-threaded-friendly torch; skip GPU tests without a GPU."""

import os

import pytest
import torch

torch.manual_seed(0)
os.environ.setdefault("TIKTOKEN_CACHE_DIR", "")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
