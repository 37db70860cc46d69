"""Packed sequences with the document mask give each document exactly its own loss (paper §3.2)."""

import torch
import torch.nn.functional as F

from herd.data import MixtureLoader
from herd.model.args import ModelArgs
from herd.model.transformer import Transformer
from herd.train.trainer import loss_sum


def test_packed_loss_equals_per_document_loss(para_tok_dir):
    args = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=512, multiple_of=32,
                     max_seq_len=2048)
    model = Transformer.build(args, seed=0)
    loader = MixtureLoader([(para_tok_dir, 1.0)], seed=0)
    batch = loader.next_batch(1, 1024)
    assert all(len(set(row.tolist())) > 2 for row in batch.doc_ids)  # rows do hold several documents
    with torch.no_grad():
        packed = loss_sum(model, batch, doc_mask=True)
        total, n = torch.zeros((), dtype=torch.float64), 0
        for b in range(batch.inputs.shape[0]):
            ids = batch.doc_ids[b]
            for d in ids.unique():
                m = ids == d
                x, y = batch.inputs[b][m], batch.targets[b][m]  # one document piece, run alone
                logits = model(x[None])[0]
                total += F.cross_entropy(logits, y, ignore_index=-100, reduction="sum").double()
                n += int((y != -100).sum())
        unmasked = loss_sum(model, batch, doc_mask=False)
    assert n == batch.n_targets
    assert torch.allclose(packed.double(), total, rtol=1e-6)  # measured 9e-8 (fp32 rounding)
    # without the mask (documents attend to each other, positions run on) the loss is different
    # (by 7e-6 relative for this small random model: 70x the packed error)
    assert not torch.allclose(unmasked.double(), total, rtol=2e-6)
