"""`herd generate` and `herd chat` (paper §6 inference; chat format of §4.1, tool calls of §4.3.5).

    herd generate CKPT --prompt "Once upon a time" [--prompt ...] [--prompts-file F.txt|F.jsonl]
                       [--out out.jsonl [--resume]] [--max-new-tokens 128 --temperature 0 --top-p 1 --top-k 0
                       --seed S --num-samples K] [--chat [--system TEXT]] [--quant fp8|int8] [--compile]
                       [--draft CKPT [--speculate-k 4]]
    herd chat CKPT [--system TEXT] [--temperature 0.6 --top-p 0.9 ...]

A prompts file is plain text (one prompt per non-empty line) or JSONL (one object per line with
"prompt" (str) or "messages" (a chat dialog, encoded in the Llama 3 chat format)). Output JSONL
has one record per completion: prompt_index, sample_index, prompt, completion, stop_reason,
tokens (and tool_calls with --chat). It is appended batch by batch, so an interrupted run keeps
what it finished and `--resume` continues after the last complete prompt.

In `herd chat`: the answer streams as it is generated; Ctrl-C stops the current answer (the part
said so far stays in the history) without leaving; `/reset` clears the history, `/exit` (or
Ctrl-D) leaves, `/tool TEXT` answers the model's tool call with TEXT (an ipython message) and lets
it continue. Tool calls in an answer are shown as tool calls.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from herd.errors import HerdError


def _sampling_args(p, temperature=0.0, top_p=1.0):
    p.add_argument("--max-new-tokens", type=int, default=256 if temperature else 128,
                   help="most new tokens per answer (fewer if the context runs out)")
    p.add_argument("--temperature", type=float, default=temperature, help="sampling temperature; 0 = greedy")
    p.add_argument("--top-p", type=float, default=top_p, help="nucleus sampling: keep the smallest set of "
                                                             "tokens with probability mass >= p")
    p.add_argument("--top-k", type=int, default=0, help="keep only the k most likely tokens (0 = off)")
    p.add_argument("--seed", type=int, default=None, help="seed for sampling (same seed, same output)")
    p.add_argument("--quant", choices=["fp8", "int8"], default=None,
                   help="fp8: the paper's FP8 recipe (FFN of all but first/last layers, row-wise scales, "
                        "activation bound 1200); int8: weight-only int8 (fast CPU decoding)")
    p.add_argument("--compile", action="store_true", help="torch.compile the decode step (slow first call)")
    p.add_argument("--tokenizer", default=None, help="tokenizer file (tiktoken format) or 'llama3', "
                                                     "if not the one saved with the checkpoint")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="weights' precision; auto: bf16 on a GPU, and on a CPU bf16 where its matrix engine "
                        "(AMX, AVX512-BF16) makes it faster, else fp32 (a cached probe, herd.precision)")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default=None,
                   help="the old name of --precision (overrides it when given)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")


def register(sub) -> None:
    from herd.errors import OneDefaultHelpFormatter

    class fmt(OneDefaultHelpFormatter, argparse.HelpFormatter):  # noqa: N801 (a formatter class, named as a value)
        pass
    g = sub.add_parser("generate", help="generate text from a checkpoint (batched, streaming, quantized)",
                       description="Generate continuations of prompts with a herd, Meta or Hugging Face "
                                   "checkpoint. Prompts of different lengths are batched; output goes to "
                                   "stdout or to a JSONL file (--out).", formatter_class=fmt)
    g.add_argument("ckpt", help="checkpoint directory")
    g.add_argument("--prompt", action="append", default=[], help="a prompt (repeat for several)")
    g.add_argument("--prompts-file", default=None, help="prompts: .txt (one per line) or .jsonl "
                                                        "({\"prompt\": ...} or {\"messages\": "
                                                        "[...]} per line)")
    g.add_argument("--out", default=None, help="write completions to this JSONL file")
    g.add_argument("--resume", action="store_true", help="continue an interrupted --out file")
    g.add_argument("--num-samples", type=int, default=1, help="completions per prompt (they share "
                                                              "its prefill)")
    g.add_argument("--max-batch", type=int, default=8, help="sequences decoded together")
    g.add_argument("--chat", action="store_true", help="wrap each prompt as a user message in the "
                                                       "chat format")
    g.add_argument("--system", default=None, help="system message (with --chat)")
    g.add_argument("--draft", default=None, help="draft checkpoint for speculative decoding (same tokenizer)")
    g.add_argument("--speculate-k", type=int, default=4, help="draft tokens per speculative round")
    g.add_argument("--image", action="append", default=[], help="an image file for a Llama 3.2 Vision "
                                                                "checkpoint (repeat for several; <|image|> "
                                                                "in the prompt places them, else they "
                                                                "come first)")
    g.add_argument("--audio", action="append", default=[], help="a WAV recording for the speech adapter "
                   "(CKPT: its directory, or an LM with --speech DIR); --prompt is then the "
                   "instruction after it")
    g.add_argument("--speech", default=None, help="speech adapter directory (herd speech train) for --audio")
    _sampling_args(g)
    g.set_defaults(func=run_generate)

    c = sub.add_parser("chat", help="chat interactively with a checkpoint",
                       description="An interactive chat in the Llama 3 chat format: history, streamed "
                                   "answers, Ctrl-C stops an answer, /reset clears the history, /exit "
                                   "leaves, /tool TEXT answers a tool call.", formatter_class=fmt)
    c.add_argument("ckpt", help="checkpoint directory")
    c.add_argument("--system", default=None, help="system message")
    c.add_argument("--tools", nargs="?", const="code_interpreter,brave_search,wolfram_alpha", default=None,
                   metavar="TOOLS", help="built-in tools the model may call, run here (tool-use loop): comma "
                                         "list of code_interpreter (herd's sandbox), brave_search, "
                                         "wolfram_alpha (offline stubs unless --search-tool/--wolfram-tool); "
                                         "default all")
    c.add_argument("--max-tool-iterations", type=int, default=5, help="most tool calls per answer "
                                                                      "with --tools")
    c.add_argument("--search-tool", default=None, help="module:function answering brave_search queries")
    c.add_argument("--wolfram-tool", default=None, help="module:function answering wolfram_alpha queries")
    _sampling_args(c, temperature=0.6, top_p=0.9)
    c.set_defaults(func=run_chat)


# ---- shared --------------------------------------------------------------------------------------
def load_for_inference(args):
    """(model, tokenizer) from the CLI flags; checks sampling values before the (slow) load."""
    import torch

    from herd.checkpoint import load_model
    from herd.inference.quant import quantize
    from herd.inference.sampling import check_sampling

    check_sampling(args.temperature, args.top_p, args.top_k)
    if args.max_new_tokens < 1:
        raise HerdError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    from herd.precision import checkpoint_dtype

    # the precision line is printed with the run's summary (a bad prompt stays a one-line error)
    lines: list = []
    dtype = checkpoint_dtype(args.dtype or getattr(args, "precision", "auto"), device, args.ckpt,
                             log=lines.append)
    args.precision_line = lines[0] if lines else None
    model, tok = load_model(args.ckpt, device=device, dtype=dtype, tokenizer=args.tokenizer)
    if tok is None:
        raise HerdError(f"{args.ckpt} has no tokenizer; pass --tokenizer FILE (or --tokenizer llama3)")
    if tok.n_words > model.args.vocab_size:
        raise HerdError(f"the tokenizer has {tok.n_words} tokens but the model's vocabulary is "
                        f"{model.args.vocab_size}; pass the tokenizer the model was trained with "
                        "(--tokenizer)")
    quantize(model, args.quant)
    return model, tok


def read_prompts(path) -> list:
    """Prompts from a .txt (one per non-empty line) or .jsonl file: str or list of messages."""
    p = Path(path)
    if not p.is_file():
        raise HerdError(f"prompts file not found: {p}")
    out = []
    from herd.errors import read_utf8

    read_utf8(p, "prompts file")  # not UTF-8: one line, before the loop below
    with open(p, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            if p.suffix != ".jsonl":
                out.append(line.rstrip("\n"))
                continue
            try:
                rec = json.loads(line)
            except ValueError as e:
                raise HerdError(f"{p}:{n}: not valid JSON ({e})") from None
            if isinstance(rec, dict) and isinstance(rec.get("prompt"), str):
                out.append(rec["prompt"])
            elif isinstance(rec, dict) and isinstance(rec.get("messages"), list):
                out.append(rec["messages"])
            else:
                raise HerdError(f"{p}:{n}: expected an object with \"prompt\" (a string) or "
                                "\"messages\" (a list)")
    if not out:
        raise HerdError(f"{p}: no prompts in the file")
    return out


def _encode(prompt, tok, chat_fmt, system):
    if isinstance(prompt, list):  # a dialog
        return chat_fmt.encode_dialog_prompt(prompt)
    if chat_fmt is not None:
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user",
                                                                               "content": prompt}]
        return chat_fmt.encode_dialog_prompt(msgs)
    return tok.encode(prompt, bos=True)


def _make_generator(args, model, tok, max_batch=8):
    from herd.inference import Generator

    if getattr(args, "draft", None):
        from herd.checkpoint import load_model
        from herd.inference.speculative import SpeculativeGenerator

        draft, _ = load_model(args.draft, device=str(model.tok_embeddings.weight.device),
                              dtype=model.tok_embeddings.weight.dtype)
        return SpeculativeGenerator(model, draft, tokenizer=tok, k=args.speculate_k)
    return Generator(model, tokenizer=tok, max_batch=max_batch, compile=args.compile)


# ---- herd generate -------------------------------------------------------------------------------
def run_generate(args) -> int:
    if args.audio or args.speech:
        if not args.audio:
            raise HerdError("--speech needs --audio FILE")
        from herd.speech.generate import run_audio

        return run_audio(args)
    prompts = list(args.prompt)
    if args.prompts_file:
        prompts += read_prompts(args.prompts_file)
    if getattr(args, "image", None):  # a vision model (herd.vision, paper §7)
        from herd.vision.generate import run_generate_images

        return run_generate_images(args, prompts)
    if not prompts:
        raise HerdError("no prompt: give --prompt TEXT or --prompts-file FILE")
    if args.num_samples < 1:
        raise HerdError(f"--num-samples must be at least 1, got {args.num_samples}")
    if any(isinstance(p, list) for p in prompts) or args.chat:
        args.chat = True
    out_path = Path(args.out) if args.out else None
    done = set()
    if out_path is not None and out_path.exists():
        if not args.resume:
            raise HerdError(f"{out_path} exists; pass --resume to continue it, or remove it")
        done = _finished_prompts(out_path, args.num_samples)
    elif args.resume and out_path is None:
        raise HerdError("--resume needs --out FILE")

    model, tok = load_for_inference(args)
    chat_fmt = None
    if args.chat:
        from herd.tokenizer.chat_format import ChatFormat

        chat_fmt = ChatFormat(tok)
    encoded = [_encode(p, tok, chat_fmt, args.system) for p in prompts]
    gen = _make_generator(args, model, tok, args.max_batch)
    kw = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
              top_k=args.top_k, seed=args.seed, num_samples=args.num_samples)
    for i, e in enumerate(encoded):  # a too-long prompt fails before any work
        gen_check = gen.target if hasattr(gen, "target") else gen
        gen_check._check([e], args.max_new_tokens, args.temperature, args.top_p, args.top_k, args.num_samples)

    if out_path is None and len(prompts) == 1 and args.num_samples == 1:
        return _generate_streamed(gen, tok, encoded[0], kw, getattr(args, "precision_line", None))

    todo = [i for i in range(len(prompts)) if i not in done]
    per_batch = max(1, args.max_batch // args.num_samples)
    from tqdm import tqdm

    t0, n_tok = time.perf_counter(), 0
    bar = tqdm(total=len(prompts), initial=len(prompts) - len(todo), unit="prompt", disable=None,
               file=sys.stderr)
    for b in range(0, len(todo), per_batch):
        idx = todo[b:b + per_batch]
        # the seed of each batch depends on its first prompt, so a resumed run draws as a full one
        bkw = dict(kw, seed=None if args.seed is None else args.seed + idx[0])
        outs = gen.generate([encoded[i] for i in idx], **bkw)
        recs = []
        for o in outs:
            i = idx[o.prompt_index]
            rec = {"prompt_index": i, "sample_index": o.sample_index,
                   "prompt": prompts[i], "completion": o.text, "stop_reason": o.stop_reason,
                   "tokens": o.tokens}
            if chat_fmt is not None:
                msg = chat_fmt.decode_assistant_message(o.tokens, _chat_stop(o.stop_reason))
                rec["tool_calls"] = msg["tool_calls"]
            n_tok += len(o.tokens)
            recs.append(rec)
        if out_path is not None:
            _append_jsonl(out_path, recs)
        else:
            for r in recs:
                print(f"[{r['prompt_index']}.{r['sample_index']}] {r['completion']}", flush=True)
        bar.update(len(idx))
    bar.close()
    dt = time.perf_counter() - t0
    if getattr(args, "precision_line", None):
        print(args.precision_line, file=sys.stderr)
    print(f"{n_tok} tokens in {dt:.1f}s ({n_tok / max(dt, 1e-9):.1f} tok/s)"
          + (f" -> {out_path}" if out_path else ""), file=sys.stderr)
    return 0


def _chat_stop(reason):
    return {"end_of_message": "end_of_message", "length": "out_of_tokens"}.get(reason, "end_of_turn")


def _finished_prompts(path: Path, num_samples: int) -> set:
    """Prompt indices with all their samples in an existing output file; a torn last line (an
    interrupted write) is dropped from the file so appending continues cleanly."""
    counts: dict[int, int] = {}
    good = 0
    with open(path, "rb") as f:
        data = f.read()
    for line in data.splitlines(keepends=True):
        try:
            rec = json.loads(line)
            counts[rec["prompt_index"]] = counts.get(rec["prompt_index"], 0) + 1
            good += len(line)
        except (ValueError, KeyError, TypeError):
            break
    if good < len(data):
        with open(path, "r+b") as f:
            f.truncate(good)
    return {i for i, c in counts.items() if c >= num_samples}


def _append_jsonl(path: Path, recs: list[dict]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs))
        f.flush()
        os.fsync(f.fileno())


def _generate_streamed(gen, tok, prompt, kw, precision_line=None) -> int:
    from herd.inference import TextStreamer

    s = TextStreamer(tok)
    t0 = time.perf_counter()
    out = gen.generate([prompt], on_token=lambda i, j, t: print(s.push(t), end="", flush=True), **kw)[0]
    print(s.flush(), flush=True)
    dt = time.perf_counter() - t0
    st = gen.stats
    if precision_line:
        print(precision_line, file=sys.stderr)
    print(f"[{len(out.tokens)} tokens, {out.stop_reason}; prefill {st.prefill_tokens} tok in "
          f"{st.prefill_s:.2f}s, decode {len(out.tokens) / max(dt - st.prefill_s, 1e-9):.1f} tok/s]",
          file=sys.stderr)
    return 0


# ---- herd chat -----------------------------------------------------------------------------------
HELP = ("commands: /reset clears the history, /exit leaves, /tool TEXT answers a tool call; "
        "Ctrl-C stops an answer")


class Chat:
    """The state of a chat: history, generation settings; `turn(user_text)` streams one answer."""

    def __init__(self, gen, tok, system=None, write=None, tools=None, max_tool_iterations=5, today=None,
                 **kw):
        """tools: a herd.serve.tools.ToolRunner and its built-in tool names, (runner, names): the
        system prompt offers them ("Environment: ipython") and each call is run and answered."""
        from herd.tokenizer.chat_format import ChatFormat, system_prompt

        self.runner, self.max_tool_iterations = (tools[0], max_tool_iterations) if tools else (None, 0)
        if tools:
            system = system_prompt(tools[1], instructions=system, today=today)
        fmt = ChatFormat(tok, python_tag="all_tool_calls" if tools else "code_interpreter")
        self.gen, self.tok, self.fmt, self.system, self.kw = gen, tok, fmt, system, kw
        self.write = write or (lambda s: (sys.stdout.write(s), sys.stdout.flush()))
        self.reset()

    def reset(self):
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    def _prompt(self) -> list[int]:
        """The dialog's tokens, dropping the oldest turns (never the system message) to leave room
        for an answer."""
        limit = self.gen.max_seq_len - min(self.kw.get("max_new_tokens", 256), self.gen.max_seq_len // 2)
        while True:
            toks = self.fmt.encode_dialog_prompt(self.messages)
            first = 1 if self.system else 0
            if len(toks) <= limit or len(self.messages) - first <= 1:
                break
            del self.messages[first]
            self.write("[history shortened to fit the context]\n")
        if len(toks) >= self.gen.max_seq_len:
            self.messages.pop()
            raise HerdError(f"the message is too long for the context ({len(toks)} >= {self.gen.max_seq_len} "
                            "tokens); send a shorter one")
        return toks

    def turn(self, role: str, text: str) -> dict:
        """Add a message and stream the assistant's answer; returns the assistant message. With tools,
        the model's built-in tool calls are run and their output sent back (ipython) until it answers
        without one (at most max_tool_iterations calls)."""
        self.messages.append({"role": role, "content": text})
        msg = self._answer()
        n = 0
        while self.runner is not None and msg["tool_calls"] and n < self.max_tool_iterations \
                and all(self.runner.can_run(c) for c in msg["tool_calls"]):
            for c in msg["tool_calls"]:
                out = self.runner(c)
                self.write(f"[tool output] {out}\n")
                self.messages.append({"role": "ipython", "content": out})
                n += 1
            msg = self._answer()
        return msg

    def _answer(self) -> dict:
        from herd.inference import TextStreamer

        prompt = self._prompt()
        streamer = TextStreamer(self.tok, skip_special=True)
        got: list[int] = []

        def on_token(i, j, t):
            got.append(t)
            d = streamer.push(t)
            if d:
                self.write(d)

        stop = None
        try:
            stop = self.gen.generate([prompt], on_token=on_token, **self.kw)[0].stop_reason
        except KeyboardInterrupt:
            self.write(streamer.flush() + " [stopped]")
            stop = "end_of_turn"
        else:
            self.write(streamer.flush())
        self.write("\n")
        msg = self.fmt.decode_assistant_message(got, _chat_stop(stop))
        for call in msg["tool_calls"]:
            self.write("[tool call] "
                       f"{call['tool_name']}({json.dumps(call['arguments'], ensure_ascii=False)})\n")
        if msg["tool_calls"] and not (self.runner and all(self.runner.can_run(c) for c in msg["tool_calls"])):
            self.write("[answer it with /tool TEXT]\n")
        if msg["stop_reason"] == "out_of_tokens":
            msg["stop_reason"] = "end_of_turn"
        self.messages.append(msg)
        return msg


def chat_loop(chat: Chat, read=input) -> int:
    chat.write(HELP + "\n")
    while True:
        try:
            line = read("> ")
        except EOFError:
            chat.write("\n")
            return 0
        except KeyboardInterrupt:
            chat.write("\n(use /exit or Ctrl-D to leave)\n")
            continue
        s = line.strip()
        if not s:
            continue
        if s == "/exit":
            return 0
        if s == "/reset":
            chat.reset()
            chat.write("[history cleared]\n")
            continue
        if s.startswith("/tool"):
            role, text = "ipython", s[len("/tool"):].strip()
        elif s.startswith("/") and len(s.split()) == 1:
            chat.write(f"unknown command {s}; {HELP}\n")
            continue
        else:
            role, text = "user", line
        try:
            chat.turn(role, text)
        except HerdError as e:
            chat.write(f"herd: error: {e}\n")


def run_chat(args) -> int:
    model, tok = load_for_inference(args)
    if getattr(args, "precision_line", None):
        print(args.precision_line, file=sys.stderr)
    from herd.inference import Generator

    gen = Generator(model, tokenizer=tok, max_batch=1, compile=args.compile)
    tools = None
    if args.tools is not None:  # the tool-use loop (herd.serve.tools)
        from herd.serve.tools import ToolRunner, load_callable
        from herd.tokenizer.chat_format import BUILTIN_TOOLS

        names = [t.strip() for t in args.tools.split(",") if t.strip()]
        for t in names:
            if t not in BUILTIN_TOOLS:
                raise HerdError(f"--tools: unknown tool {t!r}; choose from code_interpreter, brave_search, "
                                "wolfram_alpha")
        tools = (ToolRunner(search=load_callable(args.search_tool) if args.search_tool else None,
                            wolfram=load_callable(args.wolfram_tool) if args.wolfram_tool else None), names)
    chat = Chat(gen, tok, system=args.system, tools=tools, max_tool_iterations=args.max_tool_iterations,
                max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                top_k=args.top_k, seed=args.seed)
    return chat_loop(chat)
