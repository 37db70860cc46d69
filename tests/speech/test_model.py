"""Encoder/adapter shapes and padding, the LM's `embeds=` input, the speech token layout."""

import pytest
import torch

from herd.model.args import ModelArgs
from herd.model.transformer import KVCache, Transformer
from herd.speech.model import SPEECH_END, SPEECH_START, SpeechArgs, SpeechModel, lm_inputs


def tiny_lm(vocab=300):
    return Transformer.build(ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=vocab,
                                       multiple_of=32, max_seq_len=128), seed=0)


def test_embeds_of_the_token_embeddings_is_bit_identical():
    lm = tiny_lm()
    tok = torch.randint(0, 300, (2, 17))
    ref = lm(tok)
    assert torch.equal(lm(tok, embeds=lm.tok_embeddings(tok)), ref)
    assert torch.equal(lm(tok, embeds=lm.tok_embeddings(tok), hidden=True), lm(tok, hidden=True))
    # prefill with embeds, then decode tokens through the cache: the same logits as the plain prefill
    cache = KVCache(lm.args, 2, 20)
    a = lm(tok, embeds=lm.tok_embeddings(tok), cache=cache, cache_pos=0)
    nxt = torch.randint(0, 300, (2, 1))
    b = lm(nxt, cache=cache, cache_pos=17)
    full = lm(torch.cat([tok, nxt], 1))
    assert torch.allclose(a, ref, atol=1e-5) and torch.allclose(b[:, 0], full[:, -1], atol=1e-5)
    # other embeddings change the output
    assert not torch.equal(lm(tok, embeds=lm.tok_embeddings(tok) + 0.1), ref)


def test_speech_model_shapes_and_padding_independence():
    torch.manual_seed(0)
    a = SpeechArgs(dim=32, n_layers=2, n_heads=2, adapter_dim=48, adapter_heads=2, lm_dim=64, conv_kernel=5)
    m = SpeechModel(a).eval()
    feats = torch.randn(2, 101, 80)
    lengths = torch.tensor([101, 57])
    out, olen = m(feats, lengths)
    assert out.shape == (2, 13, 64)  # 101 frames -> 26 stacks of 4 (40 ms) -> 13 (80 ms)
    assert olen.tolist() == [m.n_embeddings(101), m.n_embeddings(57)] == [13, 8]
    alone, _ = m(feats[1:, :57], lengths[1:])
    assert torch.allclose(out[1, :8], alone[0], atol=1e-5)  # the padding does not leak in
    assert torch.all(out[1, 8:] == 0)
    junk = feats.clone()
    junk[1, 57:] = 1e3
    assert torch.allclose(m(junk, lengths)[0], out, atol=1e-5)
    out.sum().backward()
    assert all(p.grad is not None for p in m.parameters())


def test_lm_inputs_splices_speech_in_order():
    lm = tiny_lm()
    tokens = torch.randint(0, 300, (2, 10))
    slots = torch.zeros(2, 10, dtype=torch.bool)
    slots[0, 2:5] = True
    slots[1, 3:5] = True
    speech = torch.randn(2, 3, 64, requires_grad=True)
    emb = lm_inputs(lm, tokens, slots, speech, torch.tensor([3, 2]))
    base = lm.tok_embeddings(tokens)
    assert torch.equal(emb[0, 2:5], speech[0]) and torch.equal(emb[1, 3:5], speech[1, :2])
    assert torch.equal(emb[~slots], base[~slots])
    emb.sum().backward()
    assert speech.grad[1, 2].abs().sum() == 0 and speech.grad[0].abs().sum() > 0


def test_speech_tokens_are_llama3_reserved_specials():
    from herd.speech.data import Layout
    from herd.tokenizer import Tokenizer

    tok = Tokenizer.llama3()
    lay = Layout(tok)
    assert (lay.start, lay.end) == (tok.special_tokens[SPEECH_START], tok.special_tokens[SPEECH_END]) \
        == (128020, 128021)
    ids, slots = lay.prompt(5, "Transcribe the audio.")
    assert (sum(slots) == 5 and ids[slots.index(True) - 1] == lay.start
            and ids[len(slots) - slots[::-1].index(True)] == lay.end)
    assert (tok.decode(ids[:ids.index(lay.start)])
            == "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n")
    assert tok.decode(ids).endswith(
        " Transcribe the audio.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    text = lay.text_prompt("seven", "Answer with a number.")
    assert tok.decode(text[text.index(lay.start) + 1:text.index(lay.end)]) == "seven"


@pytest.mark.parametrize("n", [0, 7, 42, 100, 115, 999])
def test_number_words(n):
    from herd.speech.data import number_words

    want = {0: "zero", 7: "seven", 42: "forty two", 100: "one hundred", 115: "one hundred and fifteen",
            999: "nine hundred and ninety nine"}
    assert number_words(n) == want[n]


def test_generate_from_speech_equals_full_forward_greedy():
    """Prefill with the spliced embeddings + KV-cache decoding gives the tokens of a full forward
    over the whole sequence at every step."""
    from herd.speech.data import Layout, task_tokenizer
    from herd.speech.train import generate_from_speech

    tok = task_tokenizer()
    lay = Layout(tok)
    torch.manual_seed(0)
    lm = Transformer.build(ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=tok.n_words,
                                     multiple_of=32, max_seq_len=128), seed=1).eval()
    sp = SpeechModel(SpeechArgs(dim=32, n_layers=1, n_heads=2, adapter_dim=32, adapter_heads=2,
                                lm_dim=64)).eval()
    feats = torch.randn(77, 80)
    got = generate_from_speech(lm, sp, lay, feats, "Transcribe the audio.", max_new_tokens=6)
    ids, slots = lay.prompt(sp.n_embeddings(77), "Transcribe the audio.")
    with torch.no_grad():
        emb, n = sp(feats[None], torch.tensor([77]))
        want = []
        for _ in range(6):
            t = torch.tensor([ids + want])
            s = torch.tensor([slots + [False] * len(want)])
            nxt = int(lm(t, embeds=lm_inputs(lm, t, s, emb, n))[0, -1].argmax())
            if nxt == lay.eot:
                break
            want.append(nxt)
    assert got == want and len(want) > 0
