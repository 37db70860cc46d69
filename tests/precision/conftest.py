"""Fixtures for the precision tests: the shared token fixtures (tests/data/token_fixtures.py)."""

from token_fixtures import byte_tok, text_files, tok_dir  # noqa: F401
