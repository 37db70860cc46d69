"""Token data for pretraining (paper §3.1 -> §3.4): `herd tokenize` and the packed loader.

    from herd.data import tokenize_files, TokenData, MixtureLoader

    # -> data/tok/{meta.json, train-*.bin, val-*.bin, ...}
    tokenize_files(["corpus/"], tokenizer, "data/tok")
    loader = MixtureLoader([("data/web", 0.5), ("data/code", 0.25), ...], seed=0, rank=0, world=1)
    batch = loader.next_batch(batch_size=8, seq_len=256)  # Batch(inputs, targets, doc_ids), this rank's rows
    state = loader.state_dict()                           # exact position; load_state_dict(state) resumes

- `tokenize_files(inputs, tokenizer, out_dir, *, text_field="text", val_fraction=0.005, bos=True, eos=True,
  workers=0, shard_tokens=2**28, overwrite=False, progress=True) -> meta dict`: JSONL(.gz/.zst), Parquet
  or text files -> uint32 memmap shards + int64 document offsets (.idx.npy) + meta.json, on all cores.
- `TokenData(dir, split="train")`: a split's documents (`.doc(i)`, `.lengths`, `.n_tokens`).
- `MixtureLoader(sources, split, seed, rank, world)`: packed rows, documents marked for the document mask,
  deterministic, split over data-parallel ranks, resumable.
"""

from herd.data.shards import TokenData, read_meta
from herd.data.tokenize import find_inputs, read_documents, tokenize_files

__all__ = ["tokenize_files", "find_inputs", "read_documents", "TokenData", "read_meta", "MixtureLoader",
           "PackedStream", "Batch", "IGNORE"]


def __getattr__(name):  # the loader needs torch; import it on first use so the CLI starts fast
    if name in ("IGNORE", "Batch", "MixtureLoader", "PackedStream"):
        from herd.data import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'herd.data' has no attribute {name!r}")
