"""lm-evaluation-harness adapter (paper §5 evaluations through the standard harness).

Importing this module registers `HerdLM` under the model name "herd" in lm-eval's registry, so
any lm-eval task (including local YAML task files) runs on a herd checkpoint. lm-eval 0.4 finds
models only by import (it has no plugin entry points for models), so its CLI is reached through
this module, which registers the model and then hands the arguments to lm-eval's own CLI:

    python -m herd.eval.lm_eval_adapter --model herd --model_args path=CKPT --tasks arc_easy ...
    herd lm-eval --model herd --model_args path=CKPT --include_path my_tasks/ --tasks my_task

From Python: `import herd.eval.lm_eval_adapter` then `lm_eval.simple_evaluate(model="herd",
model_args="path=CKPT", tasks=[...])`, or pass `HerdLM(model=..., tokenizer=...)` as `model=`.

The three request types map onto herd.eval.scoring, so the harness's numbers are herd's own:
loglikelihood -> `loglikelihood_tokens` (lm-eval's context/continuation split, BOS in front; an empty
context is BOS alone), loglikelihood_rolling -> `token_logprobs` (disjoint windows, full context),
generate_until -> `herd.inference.Generator` with the request's stop strings. lm-eval is a heavy
optional dependency (`pip install lm-eval`); nothing else in herd imports it.
"""

from __future__ import annotations

import sys

try:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ImportError as e:  # pragma: no cover - exercised only without lm-eval
    from herd.errors import HerdError

    raise HerdError("the lm-eval adapter needs lm-evaluation-harness: pip install lm-eval") from e


@register_model("herd")
class HerdLM(LM):
    """A herd checkpoint (or an in-memory model + tokenizer) as an lm-eval model."""

    def __init__(
        self,
        path: str | None = None,
        model=None,
        tokenizer=None,
        device: str = "cpu",
        batch_size: int | str = 8,
        max_gen_toks: int = 256,
        tokenizer_path: str | None = None,
        **_,
    ):
        super().__init__()
        from herd.errors import HerdError

        import torch

        if str(device).startswith("cuda") and not torch.cuda.is_available():
            device = "cpu"  # lm-eval's CLI passes device="cuda" unless told otherwise
        if model is None:
            if path is None:
                raise HerdError("lm-eval herd model: give model_args path=CHECKPOINT_DIR")
            from herd.checkpoint import load_model

            model, tok = load_model(path, device=device, tokenizer=tokenizer_path)
            tokenizer = tokenizer or tok
        if tokenizer is None:
            raise HerdError("lm-eval herd model: the checkpoint has no tokenizer; pass tokenizer_path=...")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 8
        self.max_gen_toks = int(max_gen_toks)

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        from herd.eval.scoring import encode_pair, loglikelihood_tokens

        pairs = []
        for req in requests:
            context, continuation = req.args
            if context == "":
                pairs.append(([self.tokenizer.bos_id], self.tokenizer.encode(continuation)))
            else:
                pairs.append(encode_pair(self.tokenizer, context, continuation))
        return loglikelihood_tokens(self.model, pairs, self.batch_size)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        from herd.eval.scoring import token_logprobs

        return [
            float(token_logprobs(self.model, self.tokenizer.encode(req.args[0], bos=True)).double().sum())
            for req in requests
        ]

    def generate_until(self, requests, disable_tqdm: bool = False):
        from herd.eval.scoring import generate

        out = []
        for req in requests:
            context, kw = req.args
            kw = dict(kw or {})
            until = kw.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            temp = float(kw.get("temperature", 0.0)) if kw.get("do_sample", False) else 0.0
            texts = generate(
                self.model,
                self.tokenizer,
                [context],
                max_new_tokens=int(kw.get("max_gen_toks", self.max_gen_toks)),
                temperature=temp,
                top_p=float(kw.get("top_p", 1.0) or 1.0),
                stop=until,
                seed=0,
            )
            out.append(texts[0][0])
        return out


def main(argv: list[str] | None = None) -> int:
    """lm-eval's CLI with the "herd" model registered."""
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm_eval", *(sys.argv[1:] if argv is None else argv)]
    cli_evaluate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
