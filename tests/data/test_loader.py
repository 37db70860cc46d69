"""The packed, mixed, resumable loader: determinism, exact resume, DP split, mixing, doc masks."""

import numpy as np
import torch

from herd.data import IGNORE, MixtureLoader, TokenData


def _batches(loader, n, bs=4, seq=64):
    return [loader.next_batch(bs, seq) for _ in range(n)]


def test_rows_are_the_document_stream_with_doc_ids_and_masked_targets(tok_dir):
    L = MixtureLoader([(tok_dir, 1.0)], shuffle=False)
    data = TokenData(tok_dir)
    b = L.next_batch(4, 200)
    stream = np.concatenate([data.doc(i) for i in range(3)])
    flat = b.inputs.flatten().numpy()
    assert (flat == stream[:800].astype(np.int64)).all()  # documents back to back, no gap, in order
    # targets are the next token, except across a document boundary
    nxt = torch.from_numpy(stream[1:801].astype(np.int64)).view(4, 200)
    same = b.doc_ids[:, :] == torch.cat([b.doc_ids[:, 1:], b.doc_ids[:, -1:] * 0 - 1], 1)
    assert (b.targets[same] == nxt[same]).all()
    bos = data.meta["tokenizer"]["bos_id"]
    # each masked target is the end of a document piece: the next token starts a document (bos) or a new row
    assert all(int(t) == IGNORE for t in b.targets[b.inputs == data.meta["tokenizer"]["eos_id"]])
    assert (b.inputs[b.targets == IGNORE] == data.meta["tokenizer"]["eos_id"]).all()
    assert int(b.inputs[0, 0]) == bos


def test_deterministic_and_exact_resume(tok_dir):
    a = _batches(MixtureLoader([(tok_dir, 1.0)], seed=3), 30)
    L = MixtureLoader([(tok_dir, 1.0)], seed=3)
    _batches(L, 17)
    state = L.state_dict()
    M = MixtureLoader([(tok_dir, 1.0)], seed=3)
    M.load_state_dict(state)
    for x, y in zip(a[17:], _batches(M, 13)):  # crosses epoch boundaries of this small set
        assert torch.equal(x.inputs, y.inputs) and torch.equal(x.targets, y.targets)
        assert torch.equal(x.doc_ids, y.doc_ids)
    assert state["streams"][0]["epoch"] >= 0
    other = _batches(MixtureLoader([(tok_dir, 1.0)], seed=4), 1)[0]
    assert not torch.equal(other.inputs, a[0].inputs)


def test_data_parallel_ranks_partition_the_global_batch(tok_dir):
    one = _batches(MixtureLoader([(tok_dir, 1.0), (tok_dir, 0.5)], seed=1), 5, bs=6, seq=32)
    ranks = [_batches(MixtureLoader([(tok_dir, 1.0), (tok_dir, 0.5)], seed=1, rank=r, world=3), 5, bs=6,
                      seq=32)
             for r in range(3)]
    for i in range(5):
        assert torch.equal(torch.cat([ranks[r][i].inputs for r in range(3)]), one[i].inputs)
        assert torch.equal(torch.cat([ranks[r][i].targets for r in range(3)]), one[i].targets)


def test_mixture_weights(tok_dir):
    L = MixtureLoader([(tok_dir, 3.0), (tok_dir, 1.0)], seed=0)
    picks = np.array([L.source_of(r) for r in range(4000)])
    assert abs((picks == 0).mean() - 0.75) < 0.03
    L.next_batch(400, 16)
    consumed = []
    for st in L.streams:  # tokens each source gave: whole documents before the pointer + the offset
        assert st.epoch == 0
        consumed.append(int(st.data.lengths[st.perm(0)[:st.idx]].sum()) + st.offset)
    n0 = sum(L.source_of(r) == 0 for r in range(400))
    assert consumed == [16 * n0, 16 * (400 - n0)]
