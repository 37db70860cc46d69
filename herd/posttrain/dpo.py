"""Direct Preference Optimization with the paper's changes (§4.1.4).

    loss = -log sigmoid(beta * [(log pi(y_c) - log ref(y_c)) - (log pi(y_r) - log ref(y_r))])
           + nll_coef * NLL(y_c)

* beta = 0.1, nll_coef = 0.2 (paper).
* The log-probs sum over the response's content tokens only: headers, `<|eot_id|>` and
  `<|eom_id|>` are masked for chosen and rejected (paper: "masking out formatting tokens").
* NLL(y_c) is normalised per token: -log pi(y_c) / (number of unmasked chosen tokens), then
  averaged over the pairs of the batch [unconfirmed: the paper gives only the coefficient].
* The reference model's log-probs are computed once, before training, and cached in
  OUT/ref_logps.pt; the reference is the starting policy unless `ref_model` names another. With
  LoRA no second copy of the model is needed at all.
* Logged: the implicit rewards beta * (log pi - log ref) of chosen and rejected, their margin and
  the reward accuracy (fraction of pairs with chosen reward > rejected reward).
"""

from __future__ import annotations

from pathlib import Path
import random
import sys
from dataclasses import asdict

import torch
import torch.nn.functional as F

from herd.errors import HerdError
from herd.posttrain.config import DPOConfig
from herd.posttrain.common import (IGNORE, StepLoop, autocast, cfg_device, check_positive, load_policy,
                                   make_optimizer,
                                   masked_labels, mean_of, pad_right, sequence_logps)
from herd.posttrain.data import encode_pair, parse_preference, read_jsonl


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, chosen_tokens: torch.Tensor, beta: float = 0.1,
             nll_coef: float = 0.2) -> tuple[torch.Tensor, dict]:
    """DPO + NLL for a batch of pairs. Inputs [B]: summed log-probs of each response under the
    policy and the reference, and the number of tokens the chosen sums run over."""
    chosen_reward = beta * (policy_chosen - ref_chosen)
    rejected_reward = beta * (policy_rejected - ref_rejected)
    dpo = -F.logsigmoid(chosen_reward - rejected_reward).mean()
    nll = (-policy_chosen / chosen_tokens.clamp_min(1)).mean()
    loss = dpo + nll_coef * nll
    stats = {"dpo_loss": dpo.detach(), "nll": nll.detach(),
             "chosen_reward": chosen_reward.detach().mean(),
             "rejected_reward": rejected_reward.detach().mean(),
             "margin": (chosen_reward - rejected_reward).detach().mean(),
             "reward_accuracy": (chosen_reward > rejected_reward).float().mean()}
    return loss, stats


def encode_dpo_pair(tokenizer, pref, max_len: int):
    """(tokens, labels) for chosen and rejected; labels carry the response content only."""
    out = []
    for resp in (pref.chosen, pref.rejected):
        enc = encode_pair(tokenizer, pref.prompt, resp)
        if len(enc.tokens) > max_len:
            return None
        out.append((enc.tokens, masked_labels(enc.tokens, enc.dpo_mask)))
    if any(all(x == IGNORE for x in lab) for _, lab in out):
        return None  # an empty response: nothing to compare
    return out


def load_pairs(path, tokenizer, max_len: int, on_bad_line: str = "skip"):
    prefs = read_jsonl(path, parse_preference, on_bad_line, what="preference record")
    enc = [encode_dpo_pair(tokenizer, p, max_len) for p in prefs]
    dropped = sum(e is None for e in enc)
    if dropped:
        print(f"herd: warning: {path}: {dropped} pair(s) longer than max_len={max_len} or with an empty "
              "response were skipped", file=sys.stderr)
    enc = [e for e in enc if e is not None]
    if not enc:
        raise HerdError(f"{path}: no usable preference pair")
    return enc


def batch_logps(model, pairs, pad_id: int, dtype=torch.float32):
    """Summed log-probs and token counts [B] of chosen and of rejected, in one forward (on the
    model's device, in `dtype`; the log-softmax in fp32)."""
    device = next(model.parameters()).device
    seqs = [p[0] for p in pairs] + [p[1] for p in pairs]
    tokens = pad_right([s[0] for s in seqs], pad_id).to(device)
    labels = pad_right([s[1] for s in seqs], IGNORE).to(device)
    with autocast(device, dtype):
        lp, n = sequence_logps(model, tokens, labels)
    B = len(pairs)
    return lp[:B], lp[B:], n[:B], n[B:]


@torch.no_grad()
def reference_logps(model, pairs, pad_id: int, batch_size: int, quiet: bool = False,
                    dtype=torch.float32) -> torch.Tensor:
    """[N, 2] reference log-probs (chosen, rejected), computed once, on the model's device."""
    from tqdm import tqdm

    model.eval()
    out = []
    for i in tqdm(range(0, len(pairs), batch_size), desc="dpo: reference log-probs", disable=quiet,
                  file=sys.stderr):
        c, r, _, _ = batch_logps(model, pairs[i:i + batch_size], pad_id, dtype)
        out.append(torch.stack([c, r], dim=1))
    return torch.cat(out)


def _ref_cache(cfg: DPOConfig, model, pairs, pad_id: int, device, dtype) -> torch.Tensor:
    """[N, 2] reference log-probs on `device`, from OUT/ref_logps.pt (kept on the CPU) when it
    matches this run."""
    path = Path(cfg.out) / "ref_logps.pt"
    key = {"data": cfg.data, "ref": cfg.ref_model or cfg.model, "n": len(pairs), "max_len": cfg.max_len}
    if cfg.resume and path.is_file():
        st = torch.load(path, map_location="cpu", weights_only=True)
        if st.get("key") == key:
            return st["logps"].to(device)
    if cfg.ref_model:
        ref, _ = load_policy(cfg.ref_model, cfg.tokenizer, device=device)
        logps = reference_logps(ref, pairs, pad_id, cfg.batch_size, cfg.quiet, dtype)
        del ref
    else:
        logps = reference_logps(model, pairs, pad_id, cfg.batch_size, cfg.quiet, dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"key": key, "logps": logps.cpu()}, path)
    return logps


def dpo(cfg: DPOConfig) -> dict:
    from herd.checkpoint import save_herd
    from herd.posttrain.lora import apply_lora, merge_lora

    for name in ("model", "data", "out"):
        if not getattr(cfg, name):
            raise HerdError(f"dpo: '{name}' is required")
    check_positive("beta", cfg.beta)
    check_positive("nll_coef", cfg.nll_coef, allow_zero=True)
    check_positive("lr", cfg.lr)
    check_positive("batch_size", cfg.batch_size, integer=True)
    device, dtype = cfg_device(cfg)
    torch.manual_seed(cfg.seed)
    model, tok = load_policy(cfg.model, cfg.tokenizer, device=device)
    max_len = min(cfg.max_len, model.args.max_seq_len)
    pairs = load_pairs(cfg.data, tok, max_len, cfg.on_bad_line)
    ref = _ref_cache(cfg, model, pairs, tok.pad_id, device, dtype)  # before any update: the starting policy
    if cfg.lora_rank:
        apply_lora(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)
    per_epoch = -(-len(pairs) // cfg.batch_size)
    total = cfg.steps if cfg.steps > 0 else max(1, round(per_epoch * cfg.epochs))
    opt = make_optimizer(model.parameters(), cfg.lr, cfg.weight_decay)
    fp = {"stage": "dpo", "data": cfg.data, "lr": cfg.lr, "total": total, "batch_size": cfg.batch_size,
          "beta": cfg.beta, "nll_coef": cfg.nll_coef, "lora_rank": cfg.lora_rank, "seed": cfg.seed}
    loop = StepLoop(cfg.out, model, opt, total, lr=cfg.lr, warmup=cfg.warmup, save_every=cfg.save_every,
                    resume=cfg.resume, desc="dpo", fingerprint=fp)

    def step_fn(step):
        epoch, i = divmod(step, per_epoch)
        order = list(range(len(pairs)))
        random.Random(cfg.seed * 1000 + epoch).shuffle(order)
        idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
        model.train()
        pc, pr, nc, _ = batch_logps(model, [pairs[j] for j in idx], tok.pad_id, dtype)
        loss, stats = dpo_loss(pc, pr, ref[idx, 0], ref[idx, 1], nc, cfg.beta, cfg.nll_coef)
        loss.backward()
        return {"loss": loss.detach(), **stats}

    history = loop.run(step_fn, cfg.log_every, cfg.quiet)
    metrics = {"steps": total, "pairs": len(pairs), "loss": mean_of(history, "loss"),
               "reward_accuracy": mean_of(history, "reward_accuracy"), "margin": mean_of(history, "margin"),
               "chosen_reward": mean_of(history, "chosen_reward"),
               "rejected_reward": mean_of(history, "rejected_reward")}
    if cfg.lora_rank:
        merge_lora(model)
    save_herd(model, cfg.out, tokenizer=tok, extra={"posttrain": {"stage": "dpo", "config": asdict(cfg),
                                                                  "metrics": metrics}})
    loop.finish()
    return metrics


__all__ = ["DPOConfig", "dpo", "dpo_loss", "encode_dpo_pair", "load_pairs", "batch_logps", "reference_logps"]
