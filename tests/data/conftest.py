"""Fixtures for the data tests (shared with tests/train, defined in token_fixtures.py)."""

from token_fixtures import byte_tok, real_text_files, text_files, tok_dir  # noqa: F401
