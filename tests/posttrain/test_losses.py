"""The DPO loss with its NLL term and the reward model's ranking loss equal hand-computed values;
masked log-probs and last-token rewards equal per-sequence computations."""

import math

import pytest
import torch

from herd.posttrain.common import IGNORE, masked_labels, sequence_logps
from herd.posttrain.dpo import batch_logps, dpo_loss, encode_dpo_pair
from herd.posttrain.data import parse_preference
from herd.posttrain.reward import RewardModel, ranking_loss, rewards_for


def logsig(x):
    return -math.log(1 + math.exp(-x))


def test_dpo_loss_hand_computed():
    pc, pr = torch.tensor([-2.0, -5.0]), torch.tensor([-3.0, -4.0])
    rc, rr = torch.tensor([-2.5, -4.0]), torch.tensor([-2.5, -4.5])
    n = torch.tensor([4, 2])
    loss, st = dpo_loss(pc, pr, rc, rr, n, beta=0.1, nll_coef=0.2)
    # pair 1: chosen reward 0.1*(-2+2.5)=0.05, rejected 0.1*(-3+2.5)=-0.05, margin 0.1
    # pair 2: chosen 0.1*(-5+4)=-0.1, rejected 0.1*(-4+4.5)=0.05, margin -0.15
    dpo = -(logsig(0.1) + logsig(-0.15)) / 2
    nll = (2.0 / 4 + 5.0 / 2) / 2  # per token: -logp / tokens, averaged over pairs
    assert loss.item() == pytest.approx(dpo + 0.2 * nll, abs=1e-6)
    assert st["dpo_loss"].item() == pytest.approx(dpo, abs=1e-6)
    assert st["nll"].item() == pytest.approx(1.5, abs=1e-6)
    assert st["margin"].item() == pytest.approx((0.1 - 0.15) / 2, abs=1e-6)
    assert st["reward_accuracy"].item() == 0.5
    assert st["chosen_reward"].item() == pytest.approx((0.05 - 0.1) / 2, abs=1e-6)
    # beta and the coefficient are used as given
    loss2, _ = dpo_loss(pc, pr, rc, rr, n, beta=1.0, nll_coef=0.0)
    assert loss2.item() == pytest.approx(-(logsig(1.0) + logsig(-1.5)) / 2, abs=1e-6)


def test_dpo_gradient_matches_closed_form():
    pc = torch.tensor([-2.0], requires_grad=True)
    loss, _ = dpo_loss(pc, torch.tensor([-3.0]), torch.tensor([-2.5]), torch.tensor([-2.5]),
                       torch.tensor([4]))
    loss.backward()
    # d/dpc [-log sig(0.1 (pc - pr - rc + rr))] = -0.1 * sig(-0.1); NLL part: 0.2 * (-1/4)
    sig = 1 / (1 + math.exp(0.1))
    assert pc.grad.item() == pytest.approx(-0.1 * sig - 0.05, abs=1e-6)


def test_ranking_loss_three_responses_hand_computed():
    r = [torch.tensor([2.0, 1.0, -0.5])]  # edited, chosen, rejected
    loss, correct, n = ranking_loss(r)
    want = -(logsig(1.0) + logsig(2.5) + logsig(1.5)) / 3
    assert loss.item() == pytest.approx(want, abs=1e-6)
    assert (int(correct), n) == (3, 3)
    # with a two-response example in the same batch: mean over all four pairs, no margin term
    loss, correct, n = ranking_loss([torch.tensor([2.0, 1.0, -0.5]), torch.tensor([0.0, 1.0])])
    want = -(logsig(1.0) + logsig(2.5) + logsig(1.5) + logsig(-1.0)) / 4
    assert loss.item() == pytest.approx(want, abs=1e-6)
    assert (int(correct), n) == (3, 4)


def test_masked_sequence_logps_equal_manual(tok, tiny_model):
    pref = parse_preference({"prompt": "Tom has 3 pens.", "chosen": "#### 3", "rejected": "I think #### 4"})
    pair = encode_dpo_pair(tok, pref, 256)
    pc, pr, nc, nr = batch_logps(tiny_model, [pair], tok.pad_id)
    for (tokens, labels), got, n in ((pair[0], pc, nc), (pair[1], pr, nr)):
        lp = torch.log_softmax(tiny_model(torch.tensor([tokens]))[0], -1)
        idx = [i for i, lab in enumerate(labels) if lab != IGNORE]
        want = sum(lp[i, labels[i]].item() for i in idx)
        assert got.item() == pytest.approx(want, abs=1e-4)
        # the targets are exactly the content tokens
        assert tok.decode([labels[i] for i in idx]) in ("#### 3", "I think #### 4")
        assert int(n) == len(idx)


def test_padding_does_not_change_logps(tok, tiny_model):
    a = tok.encode("Tom has 3 pens.", bos=True)
    b = tok.encode("Mia has 12 books and 4 pens.", bos=True)
    mask_a, mask_b = [False] + [True] * (len(a) - 1), [False] + [True] * (len(b) - 1)
    la, lb = masked_labels(a, mask_a), masked_labels(b, mask_b)
    from herd.posttrain.common import pad_right

    lp, n = sequence_logps(tiny_model, pad_right([a, b], tok.pad_id), pad_right([la, lb], IGNORE))
    lpa, _ = sequence_logps(tiny_model, torch.tensor([a]), torch.tensor([la]))
    assert lp[0].item() == pytest.approx(lpa.item(), abs=1e-4)
    assert n.tolist() == [len(a) - 1, len(b) - 1]


def test_reward_reads_last_token(tok, tiny_model):
    rm = RewardModel(tiny_model)
    seqs = [tok.encode("short", bos=True), tok.encode("a much longer sequence here", bos=True)]
    r = rewards_for(rm, [seqs], tok.pad_id)[0]
    for s, got in zip(seqs, r):
        h = tiny_model.forward_hidden(torch.tensor([s]))[0, -1]
        assert got.item() == pytest.approx(rm.head(h).item(), abs=1e-5)
