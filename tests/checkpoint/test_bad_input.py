"""Bad checkpoints and bad names give one `herd: error:` line naming the file and the problem,
exit status 2 and no traceback (rule of the house 3; issue [1/7] item 6)."""

import fractions
import json
import os

import pytest
import torch

from herd.checkpoint import load_model, save_herd
from herd.checkpoint.hf import save_hf
from herd.checkpoint.meta import save_meta
from herd.cli import main
from herd.errors import HerdError
from herd.model import ModelArgs, Transformer


@pytest.fixture(scope="module")
def model():
    return Transformer.build(ModelArgs(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=64,
                                       multiple_of=16, max_seq_len=32), seed=0)


def _fails(capsys, argv, *needles):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()  # progress lines ("reading ..."), then the one error line
    assert lines[-1].startswith("herd: error: ") and sum("error" in x for x in lines) == 1, err
    for n in needles:
        assert str(n) in lines[-1], (n, err)
    return lines[-1]


def _convert(src, tmp_path):
    return ["convert", str(src), str(tmp_path / "out"), "--to", "hf"]


def _truncate(path, keep=0.5):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(int(size * keep))


def test_missing_checkpoint_and_unknown_preset(tmp_path, capsys):
    _fails(capsys, _convert(tmp_path / "nope", tmp_path), "not found", tmp_path / "nope")
    _fails(capsys, ["info", "llama9-1t"], "llama9-1t", "llama3.1-8b")
    empty = tmp_path / "empty"
    empty.mkdir()
    _fails(capsys, _convert(empty, tmp_path), empty, "no config.json or params.json")
    assert not (tmp_path / "out").exists()


def test_meta_missing_shard_file(tmp_path, capsys, model):
    save_meta(model, tmp_path / "m")
    os.remove(tmp_path / "m" / "consolidated.00.pth")
    _fails(capsys, _convert(tmp_path / "m", tmp_path), tmp_path / "m", "no consolidated.NN.pth")
    save_meta(model, tmp_path / "m2", shards=1)
    os.rename(tmp_path / "m2" / "consolidated.00.pth", tmp_path / "m2" / "consolidated.01.pth")
    _fails(capsys, _convert(tmp_path / "m2", tmp_path), "not numbered 0..0", "missing")


def test_truncated_pth(tmp_path, capsys, model):
    save_meta(model, tmp_path / "m")
    f = tmp_path / "m" / "consolidated.00.pth"
    _truncate(f)
    err = _fails(capsys, _convert(tmp_path / "m", tmp_path), f, "corrupt or truncated")
    with pytest.raises(HerdError, match="truncated"):
        load_model(tmp_path / "m")
    f.write_bytes(b"not a zip file at all")
    _fails(capsys, _convert(tmp_path / "m", tmp_path), f, "corrupt")
    assert len(err) < 400


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickled_object_is_refused(tmp_path, capsys, model):
    save_meta(model, tmp_path / "m")
    f = tmp_path / "m" / "consolidated.00.pth"
    sd = torch.load(f, weights_only=True)
    sd["evil"] = Evil()
    torch.save(sd, f)
    _fails(capsys, _convert(tmp_path / "m", tmp_path), f, "posix.system", "refuses to unpickle")
    del sd["evil"]
    torch.save({**sd, "x": fractions.Fraction(1, 3)}, f)  # a harmless but arbitrary object
    _fails(capsys, ["info", str(tmp_path / "m")], f, "fractions.Fraction", "refuses to unpickle")
    torch.save([torch.zeros(2)], f)  # tensors, but not a state dict
    _fails(capsys, _convert(tmp_path / "m", tmp_path), f, "not a state dict")


def test_meta_shape_and_key_mismatch(tmp_path, capsys, model):
    save_meta(model, tmp_path / "m")
    params = json.loads((tmp_path / "m" / "params.json").read_text())
    (tmp_path / "m" / "params.json").write_text(json.dumps({**params, "dim": 64}))
    _fails(capsys, _convert(tmp_path / "m", tmp_path), "consolidated", "has shape", "expects")
    with pytest.raises(HerdError, match="has shape"):
        load_model(tmp_path / "m")
    (tmp_path / "m" / "params.json").write_text(json.dumps(params))
    f = tmp_path / "m" / "consolidated.00.pth"
    sd = torch.load(f, weights_only=True)
    del sd["layers.0.feed_forward.w2.weight"]
    torch.save(sd, f)
    _fails(capsys, _convert(tmp_path / "m", tmp_path), "missing tensor(s) layers.0.feed_forward.w2.weight")
    sd["layers.0.feed_forward.w2.weight"] = model.layers[0].feed_forward.w2.weight.detach()
    sd["layers.1.attention.wq.weight"] = torch.zeros(32, 32)
    torch.save(sd, f)
    _fails(capsys, _convert(tmp_path / "m", tmp_path), "unexpected tensor(s) layers.1.attention.wq.weight")


def test_bad_json(tmp_path, capsys, model):
    save_meta(model, tmp_path / "m")
    (tmp_path / "m" / "params.json").write_text('{"dim": 32, "n_layers"')
    _fails(capsys, _convert(tmp_path / "m", tmp_path), tmp_path / "m" / "params.json", "not valid JSON")
    save_hf(model, tmp_path / "h")
    (tmp_path / "h" / "config.json").write_text("[1, 2]")
    _fails(capsys, _convert(tmp_path / "h", tmp_path), tmp_path / "h" / "config.json",
           "expected a JSON object")
    save_meta(model, tmp_path / "m3")
    (tmp_path / "m3" / "params.json").write_text(json.dumps({"dim": 32, "n_layers": 1, "n_heads": 3}))
    _fails(capsys, _convert(tmp_path / "m3", tmp_path), "params.json", "divisible by n_heads")


def test_truncated_safetensors(tmp_path, capsys, model):
    save_hf(model, tmp_path / "h")
    f = tmp_path / "h" / "model.safetensors"
    _truncate(f, 0.7)
    _fails(capsys, _convert(tmp_path / "h", tmp_path), f, "corrupt or truncated safetensors")
    f.write_bytes(b"\xff" * 5)
    _fails(capsys, _convert(tmp_path / "h", tmp_path), f, "corrupt or truncated safetensors")
    save_herd(model, tmp_path / "herd")
    _truncate(tmp_path / "herd" / "model.safetensors", 0.5)
    _fails(capsys, ["convert", str(tmp_path / "herd"), str(tmp_path / "o2"), "--to", "meta"],
           "model.safetensors", "truncated")


def test_hf_missing_shard_and_foreign_model(tmp_path, capsys, model):
    save_hf(model, tmp_path / "h", max_shard_bytes=5000)
    index = json.loads((tmp_path / "h" / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[1]
    os.remove(tmp_path / "h" / shard)
    _fails(capsys, _convert(tmp_path / "h", tmp_path), shard, "missing")
    save_hf(model, tmp_path / "g")
    cfg = json.loads((tmp_path / "g" / "config.json").read_text())
    (tmp_path / "g" / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2",
                                                            "architectures": ["GPT2LMHeadModel"]}))
    _fails(capsys, _convert(tmp_path / "g", tmp_path), "gpt2", "not a Llama model")
    (tmp_path / "g" / "config.json").write_text(json.dumps({**cfg, "rope_parameters": {"rope_type": "yarn"}}))
    _fails(capsys, _convert(tmp_path / "g", tmp_path), "yarn")
    (tmp_path / "g" / "config.json").write_text(json.dumps({**cfg, "num_attention_heads": 4}))
    _fails(capsys, _convert(tmp_path / "g", tmp_path), "head_dim")


def test_bad_convert_options(tmp_path, capsys, model):
    save_herd(model, tmp_path / "h")
    _fails(capsys, ["convert", str(tmp_path / "h"), str(tmp_path / "m"), "--to", "meta", "--shards", "3"],
           "KV heads")
    _fails(capsys, ["convert", str(tmp_path / "h"), str(tmp_path / "h"), "--to", "herd"], "must differ")
    _fails(capsys, ["convert", str(tmp_path / "h"), str(tmp_path / "x"), "--to", "hf", "--tokenizer",
                    str(tmp_path / "none.model")], "none.model", "not found")
    assert not (tmp_path / "m").exists() and not (tmp_path / "x").exists()
    _fails(capsys, ["info", "herd-5m", "--seq-len", "0"], "--seq-len")


def test_tokenizer_must_fit_the_model(tmp_path, capsys, model):
    from herd.tokenizer import Tokenizer

    tok = Tokenizer({bytes([i]): i for i in range(256)})  # 512 ids, the model has 64
    with pytest.raises(HerdError, match="vocab_size is 64"):
        save_hf(model, tmp_path / "h", tokenizer=tok)
    with pytest.raises(HerdError, match="vocab_size is 64"):
        save_meta(model, tmp_path / "m", tokenizer=tok)
    assert not (tmp_path / "h").exists() and not (tmp_path / "m").exists()
    save_herd(model, tmp_path / "herd")
    tok.save(tmp_path / "tok.model")
    _fails(capsys, ["convert", str(tmp_path / "herd"), str(tmp_path / "x"), "--to", "hf", "--tokenizer",
                    str(tmp_path / "tok.model")], "512 tokens", "vocab_size is 64")
