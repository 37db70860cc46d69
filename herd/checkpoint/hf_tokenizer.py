"""Export a herd (tiktoken) tokenizer as a Hugging Face `tokenizer.json` (paper §3.2 tokenizer), so
that a checkpoint written by `save_hf` is complete for transformers users
(`AutoTokenizer.from_pretrained(dir)`).

tiktoken stores only ranks; HF's byte-level BPE wants a vocabulary and a merge list. The merges
are recovered the way transformers' TikTokenConverter does: every split of a token into two
tokens, ordered by the token's rank. `ignore_merges` makes a pre-token that is itself in the
vocabulary map straight to its id, as tiktoken does. The split regex and the 256 special tokens
are Llama 3's; herd's own encoder stays tiktoken (this file is only for export).

tokenizer_config.json carries a chat template for text dialogs in the Llama 3.1 format of
herd.tokenizer.chat_format (`apply_chat_template(..., add_generation_prompt=True)` gives the ids of
`ChatFormat.encode_dialog_prompt`); unlike Meta's HF template it neither trims the messages nor adds a
default system prompt, as Meta's reference ChatFormat (llama-models) does not. Tool calls and
`<|eom_id|>` endings are for herd's ChatFormat.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from herd.errors import HerdError


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map, used by HF's ByteLevel."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def to_hf_tokenizer(tok):
    """herd Tokenizer -> tokenizers.Tokenizer with the same ids."""
    from tokenizers import AddedToken, Regex, decoders, pre_tokenizers, processors
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers.models import BPE

    enc = _bytes_to_unicode()
    ranks = tok.mergeable_ranks

    table = {b: ord(c) for b, c in enc.items()}

    def s(b: bytes) -> str:  # bytes -> HF's ByteLevel string, at C speed
        return b.decode("latin-1").translate(table)

    vocab = {s(t): r for t, r in ranks.items()}
    merges = []
    for t, r in ranks.items():
        if len(t) < 2:
            continue
        local = [(t[:i], t[i:]) for i in range(1, len(t)) if t[:i] in ranks and t[i:] in ranks]
        local.sort(key=lambda m: (ranks[m[0]], ranks[m[1]]))
        merges.extend((r, a, b) for a, b in local)
    merges.sort(key=lambda m: m[0])
    hf = HFTokenizer(BPE(vocab, [(s(a), s(b)) for _, a, b in merges], fuse_unk=False, ignore_merges=True))
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(tok.pat_str), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    hf.decoder = decoders.ByteLevel()
    specials = sorted(tok.special_tokens.items(), key=lambda kv: kv[1])
    hf.add_special_tokens([AddedToken(t, normalized=False, special=True) for t, _ in specials])
    bos = "<|begin_of_text|>"
    hf.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                                      special_tokens=[(bos, tok.bos_id)]),
    ])
    return hf


# The Llama 3.1 dialog format (herd.tokenizer.chat_format) for text messages: the "tool" role is
# written "ipython", a list content is its text items in order.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- set role = 'ipython' if message['role'] == 'tool' else message['role'] %}"
    "{{- '<|start_header_id|>' + role + '<|end_header_id|>\\n\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for item in message['content'] %}"
    "{{- item if item is string else item['text'] }}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"


def save_hf_tokenizer(tok, path: str | os.PathLike, model_max_length: int | None = None) -> None:
    """Write tokenizer.json + tokenizer_config.json (with the chat template) + special_tokens_map.json
    into directory `path`, as in Meta's HF repos."""
    p = Path(path)
    to_hf_tokenizer(tok).save(str(p / "tokenizer.json"))
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": BOS, "eos_token": EOS,
           "clean_up_tokenization_spaces": False, "model_input_names": ["input_ids", "attention_mask"]}
    if model_max_length:
        cfg["model_max_length"] = model_max_length
    cfg["chat_template"] = CHAT_TEMPLATE
    (p / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    special = {"content": None, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
    (p / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": {**special, "content": BOS}, "eos_token": {**special, "content": EOS}},
        indent=2) + "\n")


def load_hf_tokenizer_json(path: str | os.PathLike):
    """A Llama 3 style tokenizer.json (byte-level BPE, Llama 3's split pattern) -> herd Tokenizer
    with the same ids; the BPE ranks are the vocabulary ids below the 256 special tokens."""
    from herd.checkpoint.common import read_json
    from herd.tokenizer import Tokenizer

    p = Path(path)
    d = read_json(p, "tokenizer")
    model = d.get("model") or {}
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise HerdError(f"{p}: not a byte-level BPE tokenizer; herd reads Llama 3 style tokenizers only")
    pre = d.get("pre_tokenizer") or {}
    splits = [x for x in (pre.get("pretokenizers") or [pre])
              if isinstance(x, dict) and x.get("type") == "Split"]
    if not any((x.get("pattern") or {}).get("Regex") == Tokenizer.pat_str for x in splits):
        raise HerdError(f"{p}: its split pattern is not Llama 3's; pass a tiktoken tokenizer.model with "
                        "--tokenizer")
    dec = {c: b for b, c in _bytes_to_unicode().items()}
    try:
        ranks = {bytes(dec[c] for c in tok): i for tok, i in model["vocab"].items()}
    except KeyError:
        raise HerdError(f"{p}: vocabulary entries are not byte-level strings") from None
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise HerdError(f"{p}: vocabulary ids are not 0..{len(ranks) - 1}")
    t = Tokenizer(ranks, name=p.stem, path=str(p))
    for added in d.get("added_tokens") or []:
        if t.special_tokens.get(added.get("content")) not in (None, added.get("id")):
            raise HerdError(f"{p}: special token {added['content']} has id {added['id']}, Llama 3 has "
                            f"{t.special_tokens[added['content']]}")
    return t


__all__ = ["to_hf_tokenizer", "save_hf_tokenizer", "load_hf_tokenizer_json", "CHAT_TEMPLATE"]
