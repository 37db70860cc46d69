"""herd's Hugging Face export is laid out as Meta's HF repos (meta-llama/Llama-3.1-8B-Instruct): the
tiktoken tokenizer.model lives under original/, never at the root, where llama.cpp's converter and
transformers' slow LlamaTokenizer take it for SentencePiece. transformers' AutoTokenizer and
LlamaForCausalLM load the export with herd's ids, chat prompts and logits; herd loads the new layout,
its old one (tokenizer.model at the root) and the optional Meta weights under original/."""

import json
import shutil

import pytest
import torch

from herd.checkpoint import convert_checkpoint, detect_format, load_model, save_herd
from herd.checkpoint.hf import save_hf
from herd.cli import main
from herd.model import ModelArgs, Transformer
from herd.tokenizer import Tokenizer
from herd.tokenizer.chat_format import ChatFormat

TOL = 1e-4  # as tests/model/test_parity_hf.py (fp32)
TEXT = ("Hello world!  The  quick brown fox's 12345 jumps.\n\n\tdef f(x):\n        return x ** 2  # code\n"
        "Ελληνικά русский 日本語 🙂 naïve café    \n\n\n end")
DIALOG = [{"role": "system", "content": "You are a helpful assistant."},
          {"role": "user", "content": "hello world, what is 12 * 34?"},
          {"role": "assistant", "content": "It is 408."},
          {"role": "tool", "content": "{\"result\": 408}"},
          {"role": "user", "content": [{"type": "text", "text": "Thanks! And 2 + 2?"}]}]


def _tok():
    ranks = {bytes([i]): i for i in range(256)}
    for piece in (b"he", b"ll", b"hell", b"hello", b" w", b"or", b" wor", b" world", b"  ", b"\n\n", b"re",
                  b"tu", b"tur", b"turn", b" re", b" return", b"\xc3\xa9", b"caf", b"caf\xc3\xa9", b"user",
                  b"ass", b"ist", b"ant", b"assist", b"assistant", b"sys", b"tem", b"system"):
        ranks[piece] = len(ranks)
    return Tokenizer(ranks)


def _model(vocab, **over):
    a = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=vocab, multiple_of=16, max_seq_len=512,
             norm_eps=1e-5, use_scaled_rope=True, rope_old_context_len=64)
    m = Transformer.build(ModelArgs(**{**a, **over}), seed=3).eval()
    g = torch.Generator().manual_seed(4)
    # trained-model scale (std 1/sqrt(fan_in)), so attention and RoPE show in the logits
    with torch.no_grad():
        for name, w in m.named_parameters():
            if w.dim() == 2 and "tok_embeddings" not in name:
                w.copy_(torch.randn(w.shape, generator=g) / w.shape[1] ** 0.5)
    return m


def test_export_is_laid_out_as_metas_hf_repos(tmp_path):
    tok = _tok()
    save_hf(_model(tok.n_words), tmp_path / "hf", tokenizer=tok)
    d = tmp_path / "hf"
    assert sorted(p.name for p in d.iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors", "original", "special_tokens_map.json",
        "tokenizer.json", "tokenizer_config.json"]
    assert sorted(p.name for p in (d / "original").iterdir()) == ["tokenizer.model"]
    assert Tokenizer.load(d / "original" / "tokenizer.model").mergeable_ranks == tok.mergeable_ranks
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    assert "<|start_header_id|>" in cfg["chat_template"] and cfg["model_max_length"] == 512
    special = json.loads((d / "special_tokens_map.json").read_text())
    assert special["bos_token"]["content"] == "<|begin_of_text|>"
    assert special["eos_token"]["content"] == "<|end_of_text|>"
    gen = json.loads((d / "generation_config.json").read_text())
    assert gen == {"bos_token_id": tok.bos_id, "eos_token_id": tok.stop_tokens}
    assert detect_format(d) == "hf"
    # a model without a tokenizer has no original/ at all; hf_tokenizer=False keeps only
    # original/tokenizer.model
    save_hf(_model(tok.n_words), tmp_path / "bare")
    assert not (tmp_path / "bare" / "original").exists()
    save_hf(_model(tok.n_words), tmp_path / "tiktoken-only", tokenizer=tok, hf_tokenizer=False)
    assert sorted(p.name for p in (tmp_path / "tiktoken-only").rglob("*tokenizer*")) == ["tokenizer.model"]
    assert not (tmp_path / "tiktoken-only" / "tokenizer.model").exists()


@pytest.mark.parametrize("tied", [False, True])
def test_transformers_loads_the_export(tmp_path, tied):
    transformers = pytest.importorskip("transformers")
    tok = _tok()
    model = _model(tok.n_words, tie_embeddings=tied)
    save_hf(model, tmp_path / "hf", tokenizer=tok)
    at = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    hf = transformers.LlamaForCausalLM.from_pretrained(str(tmp_path / "hf"), dtype=torch.float32).eval()
    for text in (TEXT, "hello world", " return café"):
        assert at(text)["input_ids"] == tok.encode(text, bos=True)
        assert at.decode(tok.encode(text)) == text
    assert at.bos_token_id == tok.bos_id and at.eos_token_id == tok.eos_id
    assert at.convert_tokens_to_ids("<|eot_id|>") == tok.eot_id
    # the chat template gives herd's Llama 3.1 dialog prompt
    chat = at.apply_chat_template(DIALOG, add_generation_prompt=True, tokenize=True)
    chat = chat["input_ids"] if isinstance(chat, dict) or hasattr(chat, "keys") else chat
    assert chat == ChatFormat(tok).encode_dialog_prompt(DIALOG)
    # and the logits are herd's, on the tokens of a real text
    ids = torch.tensor([tok.encode(TEXT * 2, bos=True)])
    assert ids.shape[1] > 150
    with torch.no_grad():
        ours, ref = model(ids), hf(ids).logits.float()
    assert ours.abs().max() > 0.5
    assert (ours - ref).abs().max().item() <= TOL
    assert hf.config.tie_word_embeddings == tied


def test_herd_loads_new_and_old_layouts(tmp_path):
    tok = _tok()
    model = _model(tok.n_words)
    save_hf(model, tmp_path / "new", tokenizer=tok)
    # herd's exports before the original/ layout: tokenizer.model at the root, no original/
    shutil.copytree(tmp_path / "new", tmp_path / "old")
    shutil.move(tmp_path / "old" / "original" / "tokenizer.model", tmp_path / "old" / "tokenizer.model")
    (tmp_path / "old" / "original").rmdir()
    # Meta's own HF repos: original/ only, no tokenizer.json
    shutil.copytree(tmp_path / "new", tmp_path / "meta-like")
    (tmp_path / "meta-like" / "tokenizer.json").unlink()
    for name in ("new", "old", "meta-like"):
        m2, t2 = load_model(tmp_path / name)
        assert t2 is not None and t2.mergeable_ranks == tok.mergeable_ranks, name
        for k, v in model.state_dict().items():
            assert torch.equal(v, m2.state_dict()[k]), (name, k)
        # through the converter too, and the export dir works as --tokenizer
        convert_checkpoint(tmp_path / name, tmp_path / f"{name}-herd", "herd", log=lambda s: None)
        assert (tmp_path / f"{name}-herd" / "tokenizer.model").is_file()
        _, t3 = load_model(tmp_path / f"{name}-herd", tokenizer=tmp_path / name)
        assert t3.encode(TEXT) == tok.encode(TEXT)
    # the converter from the old layout writes the new one
    convert_checkpoint(tmp_path / "old", tmp_path / "old-to-hf", "hf", log=lambda s: None)
    assert (tmp_path / "old-to-hf" / "original" / "tokenizer.model").is_file()
    assert not (tmp_path / "old-to-hf" / "tokenizer.model").exists()


def test_original_weights_are_a_meta_checkpoint(tmp_path, capsys):
    tok = _tok()
    model = _model(tok.n_words, tie_embeddings=True)
    save_herd(model.to(torch.bfloat16), tmp_path / "herd", tokenizer=tok)
    assert main(["convert", str(tmp_path / "herd"), str(tmp_path / "hf"), "--to", "hf",
                 "--original-weights"]) == 0
    orig = tmp_path / "hf" / "original"
    assert sorted(p.name for p in orig.iterdir()) == ["consolidated.00.pth", "params.json", "tokenizer.model"]
    assert not (tmp_path / "hf" / "tokenizer.model").exists()
    assert detect_format(orig) == "meta"
    m_meta, t_meta = load_model(orig)
    m_hf, t_hf = load_model(tmp_path / "hf")
    assert t_meta.mergeable_ranks == t_hf.mergeable_ranks == tok.mergeable_ranks
    for k, v in model.state_dict().items():
        assert v.dtype == torch.bfloat16
        assert torch.equal(v.float(), m_meta.state_dict()[k]), k
        assert torch.equal(v.float(), m_hf.state_dict()[k]), k
    assert m_meta.args == m_hf.args
    capsys.readouterr()
    assert main(["convert", str(tmp_path / "herd"), str(tmp_path / "m"), "--to", "meta",
                 "--original-weights"]) == 2
    assert "--original-weights" in capsys.readouterr().err and not (tmp_path / "m").exists()
