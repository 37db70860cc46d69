"""The tokenizer stored with a checkpoint (paper §3.2 tokenizer): a tiktoken tokenizer.model beside
the weights or under original/ (Meta's Hugging Face layout), else a Llama 3 style tokenizer.json;
and a tokenizer named on the command line ('llama3', a file or a directory holding one).

Above the formats' shared readers (herd.checkpoint.common) and the HF tokenizer.json reader
(herd.checkpoint.hf_tokenizer): each format's loader asks here for its tokenizer.
"""

from __future__ import annotations

from pathlib import Path

from herd.checkpoint.common import _first_line
from herd.checkpoint.hf_tokenizer import load_hf_tokenizer_json
from herd.errors import HerdError


def load_tokenizer_beside(path: Path):
    """The herd/tiktoken tokenizer.model found beside the weights (else a Llama 3 style HF
    tokenizer.json), or None."""
    f = Path(path) / "tokenizer.model"
    if not f.is_file():
        if (Path(path) / "tokenizer.json").is_file():
            return load_hf_tokenizer_json(Path(path) / "tokenizer.json")
        return None
    from herd.tokenizer import Tokenizer

    try:
        return Tokenizer.load(f)
    except HerdError:
        raise
    except Exception as e:  # a SentencePiece model (Llama 2) or a damaged file
        raise HerdError(f"{f}: not a tiktoken BPE file ({_first_line(e)}); pass --tokenizer PATH "
                        f"to use another tokenizer") from None


def load_tokenizer_in(path: Path):
    """The tokenizer of a checkpoint directory laid out as Meta's Hugging Face repos (and herd's HF
    export) are: the tiktoken original/tokenizer.model; else what `load_tokenizer_beside` finds
    (tokenizer.model beside the weights, as herd's HF exports before the original/ layout, or
    tokenizer.json), or None."""
    p = Path(path)
    if (p / "original" / "tokenizer.model").is_file():
        return load_tokenizer_beside(p / "original")
    return load_tokenizer_beside(p)


def tokenizer_from_spec(spec):
    """A tokenizer named on the command line or in load_model/convert_checkpoint: 'llama3' (the real
    Llama 3 tokenizer), a tiktoken file, or a checkpoint directory holding one (tokenizer.model, a
    Hugging Face export's original/tokenizer.model, or a Llama 3 style tokenizer.json)."""
    from herd.tokenizer import Tokenizer

    if str(spec) == "llama3":
        return Tokenizer.llama3()
    p = Path(spec)
    if p.is_dir():
        tok = load_tokenizer_in(p)
        if tok is None:
            raise HerdError(f"{p}: no tokenizer.model, original/tokenizer.model or tokenizer.json in this "
                            "directory")
        return tok
    return Tokenizer.load(p)


__all__ = ["load_tokenizer_beside", "load_tokenizer_in", "tokenizer_from_spec"]
