"""The packed, mixed, resumable data loader (paper §3.2 document mask, §3.1 data mix, §3.3 DP).

Documents of each source are read in a seeded random order (a new permutation every epoch) and
laid back to back; rows of `seq_len` tokens are cut from that stream. Each row carries, besides
its tokens, the id of the document piece each token belongs to (`doc_ids`, for the model's
block-causal document mask) and targets shifted by one, with the target of a document's last
token masked (-100): no token is asked to predict the next document.

Mixing is per row: global row r comes from source k chosen by a seeded draw with the sources'
weights, so the mix holds exactly in expectation whatever the batch or sequence length.
Rows are numbered globally; at every step the global batch is rows [r, r + batch), and
data-parallel rank k materialises the k-th contiguous slice of it. Every rank advances all
source pointers over the whole batch (arithmetic on document lengths, no reading), so ranks stay
in step without talking, and a 2-rank run sees exactly the rows of a 1-rank run.

The whole position is a small JSON-able dict (`state_dict()`): the global row counter and, per
source, (epoch, index in the permutation, offset in the current document). It is saved in every
training checkpoint, so a resumed run continues with the very next token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from herd.data.shards import TokenData
from herd.errors import HerdError

IGNORE = -100


class PackedStream:
    """One source as an endless stream of document pieces, in a seeded order per epoch."""

    def __init__(self, data: TokenData, seed: int, shuffle: bool = True):
        if data.n_tokens == 0:
            raise HerdError(f"{data.path}: the '{data.split}' split has no tokens; tokenize some documents "
                            "into it")
        self.data, self.seed, self.shuffle = data, seed, shuffle
        self.epoch, self.idx, self.offset = 0, 0, 0
        self._perm_epoch, self._perm = -1, None

    def perm(self, epoch: int) -> np.ndarray:
        if self._perm_epoch != epoch:
            n = self.data.n_docs
            if self.shuffle:
                self._perm = np.random.default_rng([self.seed, epoch]).permutation(n)
            else:
                self._perm = np.arange(n)
            self._perm_epoch = epoch
        return self._perm

    def walk(self, n: int, advance: bool) -> list[tuple[int, int, int]]:
        """The next `n` tokens as (document, start, end) pieces; moves the pointer if `advance`."""
        epoch, idx, offset = self.epoch, self.idx, self.offset
        pieces = []
        lengths = self.data.lengths
        while n > 0:
            perm = self.perm(epoch)
            doc = int(perm[idx])
            take = min(n, int(lengths[doc]) - offset)
            if take > 0:
                pieces.append((doc, offset, offset + take))
                n -= take
                offset += take
            if offset >= lengths[doc]:
                idx, offset = idx + 1, 0
                if idx >= len(perm):
                    epoch, idx = epoch + 1, 0
        if advance:
            self.epoch, self.idx, self.offset = epoch, idx, offset
        return pieces

    def row(self, seq_len: int, materialize: bool):
        """Consume one row of `seq_len` tokens. With `materialize`, return (tokens [seq_len + 1],
        piece [seq_len + 1]): the extra token is only peeked, to give the last position a target."""
        if not materialize:
            self.walk(seq_len, advance=True)
            return None
        pieces = self.walk(seq_len + 1, advance=False)
        self.walk(seq_len, advance=True)
        toks = np.concatenate([self.data.doc(d, s, e) for d, s, e in pieces]).astype(np.int64)
        piece = np.concatenate([np.full(e - s, i, dtype=np.int64) for i, (_, s, e) in enumerate(pieces)])
        return toks, piece

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "idx": self.idx, "offset": self.offset}

    def load_state_dict(self, s: dict):
        self.epoch, self.idx, self.offset = int(s["epoch"]), int(s["idx"]), int(s["offset"])


@dataclass
class Batch:
    inputs: torch.Tensor  # [B, T] token ids
    targets: torch.Tensor  # [B, T] next token, IGNORE across document boundaries
    doc_ids: torch.Tensor  # [B, T] document piece of each token (for the document mask)

    def to(self, device):
        return Batch(self.inputs.to(device, non_blocking=True), self.targets.to(device, non_blocking=True),
                     self.doc_ids.to(device, non_blocking=True))

    @property
    def n_targets(self) -> int:
        return int((self.targets != IGNORE).sum())


class MixtureLoader:
    """Rows from several sources mixed by weight, split over data-parallel ranks."""

    def __init__(self, sources: list[tuple[str, float]], split: str = "train", seed: int = 0, rank: int = 0,
                 world: int = 1, shuffle: bool = True):
        if not sources:
            raise HerdError("no data sources given (config [[data.sources]] path = ...)")
        self.datas = [TokenData(p, split) for p, _ in sources]
        vs = {d.vocab_size for d in self.datas}
        if len(vs) > 1:
            raise HerdError(f"data sources were tokenized with different vocabularies ({sorted(vs)}); "
                            "tokenize them all with the same tokenizer")
        self.vocab_size = vs.pop()
        w = np.asarray([float(x) for _, x in sources])
        self.cum = np.cumsum(w / w.sum())
        self.streams = [PackedStream(d, seed=seed * 1000 + i, shuffle=shuffle)
                        for i, d in enumerate(self.datas)]
        self.seed, self.rank, self.world = seed, rank, world
        self.row = 0

    def source_of(self, row: int) -> int:
        if len(self.streams) == 1:
            return 0
        u = np.random.default_rng([self.seed, 7, row]).random()
        return int(min(np.searchsorted(self.cum, u, side="right"), len(self.streams) - 1))

    def next_batch(self, batch_size: int, seq_len: int) -> Batch:
        """The next global batch of `batch_size` rows; returns this rank's slice of it."""
        if batch_size % self.world:
            raise HerdError(f"batch size {batch_size} does not divide over {self.world} data-parallel ranks")
        local = batch_size // self.world
        lo = self.rank * local
        rows = []
        for j in range(batch_size):
            s = self.streams[self.source_of(self.row + j)]
            r = s.row(seq_len, materialize=lo <= j < lo + local)
            if r is not None:
                rows.append(r)
        self.row += batch_size
        toks = np.stack([t for t, _ in rows])
        piece = np.stack([p for _, p in rows])
        inputs = torch.from_numpy(toks[:, :-1].copy())
        targets = torch.from_numpy(toks[:, 1:].copy())
        targets[torch.from_numpy(piece[:, 1:] != piece[:, :-1])] = IGNORE
        return Batch(inputs, targets, torch.from_numpy(piece[:, :-1].copy()))

    def state_dict(self) -> dict:
        return {"row": self.row, "streams": [s.state_dict() for s in self.streams]}

    def load_state_dict(self, s: dict):
        if len(s["streams"]) != len(self.streams):
            raise HerdError(f"checkpoint data position has {len(s['streams'])} sources, the config has "
                            f"{len(self.streams)}; resume with the same data sources")
        self.row = int(s["row"])
        for st, x in zip(self.streams, s["streams"]):
            st.load_state_dict(x)


__all__ = ["MixtureLoader", "PackedStream", "Batch", "IGNORE"]
