"""The FastAPI app of `herd serve`: OpenAI's `/v1/models`, `/v1/chat/completions`, `/v1/completions`,
plus `/health`, `/metrics` (Prometheus text) and the chat page at `/`.

    app = create_app(model_or_engine, tokenizer, model_name="herd", api_key=None, moderation=None,
                     tool_loop=False, ...)

Generation goes through one `BatchEngine` (continuous batching); each request reads its tokens
from its own asyncio queue. Text is detokenized incrementally (a UTF-8 character is never split),
stop strings are held back until they can no longer match, and the streamed deltas concatenate to
exactly the non-streamed text. Errors have OpenAI's shape `{"error": {"message", "type", "param",
"code"}}` with OpenAI's status codes (400 for malformed JSON and invalid values, never FastAPI's 422).
"""

import asyncio
import json
import logging
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from herd.errors import HerdError
from herd.serve.moderation import REFUSAL
from herd.serve.protocol import ERROR_TYPES, error_body, parse_chat, parse_completion
from herd.serve.tools import RequestError, ToolRunner, convert_messages, openai_tool_calls

log = logging.getLogger("herd.serve")
STATIC = Path(__file__).with_name("static")
SENTENCE_END = re.compile(r"[.!?\n](\s|$)")


class ApiError(Exception):
    def __init__(self, status: int, message: str, param=None, code=None, type_=None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type_ or ERROR_TYPES.get(status, "invalid_request_error")

    def body(self):
        return error_body(self.message, self.type, self.param, self.code)


def _from_request_error(e: RequestError) -> ApiError:
    return ApiError(getattr(e, "status", 400), str(e), getattr(e, "param", None), getattr(e, "code", None))


# ---- one choice's output ----------------------------------------------------------------------------
@dataclass
class _Choice:
    index: int
    tok: object
    stop: list[str]
    tools_active: bool
    python_tag_id: int
    tokens: list[int] = field(default_factory=list)
    completion_tokens: int = 0
    text: str = ""  # the text decided so far (sent or to send)
    sent: int = 0  # characters of `text` already handed out
    held: str = ""  # text held back (a possible stop-string start, or a tool call being written)
    finish_reason: str | None = None
    tool_mode: bool | None = None  # None: not decided yet
    logprobs: list = field(default_factory=list)
    stop_hit: bool = False

    def __post_init__(self):
        from herd.inference.stream import TextStreamer

        self.streamer = TextStreamer(self.tok, skip_special=True)

    def _release(self, final: bool):
        buf = self.held
        if self.tool_mode is None and self.tools_active:
            s = buf.lstrip()
            if not s and not final:
                return
            self.tool_mode = bool(s) and s[0] in "{[<"
        if self.tool_mode and not final:
            return
        if self.stop:
            cut = min((i for i in (buf.find(s) for s in self.stop) if i >= 0), default=-1)
            if cut >= 0:
                self.text += buf[:cut]
                self.held = ""
                self.stop_hit = True
                return
            if not final:  # keep the longest tail that may start a stop string
                keep = 0
                for s in self.stop:
                    for k in range(min(len(s) - 1, len(buf)), keep, -1):
                        if buf.endswith(s[:k]):
                            keep = k
                            break
                self.text += buf[: len(buf) - keep]
                self.held = buf[len(buf) - keep :]
                return
        self.text += buf
        self.held = ""

    def add_token(self, t: int, logprob=None, top=None):
        self.tokens.append(t)
        self.completion_tokens += 1
        if t == self.python_tag_id:
            self.tool_mode = True
        if logprob is not None:
            self.logprobs.append((t, logprob, top or []))
        self.held += self.streamer.push(t)
        self._release(final=False)

    def finish(self, reason: str):
        self.held += self.streamer.flush()
        self._release(final=True)
        self.finish_reason = "stop" if self.stop_hit else reason

    def take(self) -> str:
        out = self.text[self.sent :]
        self.sent = len(self.text)
        return out


def _piece(tok, t: int) -> tuple[str, list[int]]:
    b = tok.id_to_piece(int(t))
    return b.decode("utf-8", errors="replace"), list(b)


def _chat_logprobs(tok, entries) -> dict:
    content = []
    for t, lp, top in entries:
        s, b = _piece(tok, t)
        tops = []
        for i, v in top:
            ts, tb = _piece(tok, i)
            tops.append({"token": ts, "logprob": v, "bytes": tb})
        content.append({"token": s, "logprob": lp, "bytes": b, "top_logprobs": tops})
    return {"content": content, "refusal": None}


def _completion_logprobs(tok, entries, offset0: int) -> dict:
    tokens, lps, tops, offs = [], [], [], []
    off = offset0
    for t, lp, top in entries:
        s, _ = _piece(tok, t)
        tokens.append(s)
        lps.append(lp)
        tops.append({_piece(tok, i)[0]: v for i, v in top} if top else None)
        offs.append(off)
        off += 0 if tok.is_special(t) else len(s)
    return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offs}


# ---- metrics ----------------------------------------------------------------------------------------
class _Metrics:
    def __init__(self, engine):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "herd_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=r
        )
        self.prompt_tokens = Counter("herd_prompt_tokens", "prompt tokens of completed requests", registry=r)
        self.completion_tokens = Counter("herd_completion_tokens", "tokens generated", registry=r)
        self.reused = Gauge(
            "herd_prefix_reused_tokens", "prompt tokens taken from the prefix cache (cumulative)", registry=r
        )
        self.reused.set_function(lambda: engine.stats["reused_prompt_tokens"])
        self.queue = Gauge("herd_queue_depth", "requests waiting for a slot", registry=r)
        self.queue.set_function(lambda: engine.queue_depth)
        self.running = Gauge("herd_running_sequences", "sequences holding a slot of the KV cache", registry=r)
        self.running.set_function(lambda: engine.running)
        self.slots = Gauge("herd_slots", "slots (rows) of the KV cache", registry=r)
        self.slots.set(engine.max_batch)
        self.tps = Gauge("herd_tokens_per_second", "tokens generated per second (last 10 s)", registry=r)
        self.tps.set_function(lambda: engine.tokens_per_second())
        self.ttft = Histogram(
            "herd_time_to_first_token_seconds",
            "time from request to its first token",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.latency = Histogram(
            "herd_request_seconds",
            "time from request to its last token",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r,
        )
        self.moderation = Counter(
            "herd_moderation_decisions", "moderation decisions", ["stage", "result"], registry=r
        )
        self.moderation_s = Histogram("herd_moderation_seconds", "moderation latency", ["stage"], registry=r)

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class _CatchAll:
    """ASGI middleware: an exception that escaped the handlers becomes a 500 in OpenAI's shape and one log
    line (Starlette's own last resort answers too, but logs a traceback)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def send_(msg):
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, receive, send_)
        except Exception as e:  # noqa: BLE001
            log.error("internal error on %s: %s: %s", scope.get("path"), type(e).__name__, e)
            if not started:
                body = json.dumps(error_body(f"internal error: {type(e).__name__}", "server_error")).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": body})


# ---- the app ----------------------------------------------------------------------------------------
def create_app(
    engine_or_model,
    tokenizer,
    *,
    model_name: str = "herd",
    api_key: str | None = None,
    max_batch: int = 8,
    max_seq_len: int | None = None,
    prefill_chunk: int = 512,
    max_queue: int = 256,
    moderation=None,
    tool_loop: bool = False,
    tool_runner: ToolRunner | None = None,
    max_tool_iterations: int = 5,
    builtin_tools=(),
    today=None,
    max_body_bytes: int = 4 << 20,
    created: int | None = None,
):
    """The app. `engine_or_model`: a BatchEngine, or a herd Transformer (an engine is built with
    max_batch/max_seq_len/prefill_chunk/max_queue). `moderation`: an object with check_input /
    check_output (herd.serve.moderation). `tool_loop`: run built-in tool calls (code interpreter in
    the sandbox, search, wolfram through `tool_runner`) and continue, at most max_tool_iterations.
    `builtin_tools`: built-in tools offered in every chat request. `today`: the date the tool
    system prompt shows (default: today)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from herd.serve.engine import BatchEngine, SamplingParams
    from herd.tokenizer.chat_format import ChatFormat

    if tokenizer is None:
        raise HerdError("herd serve needs the model's tokenizer")
    engine = (
        engine_or_model
        if isinstance(engine_or_model, BatchEngine)
        else BatchEngine(
            engine_or_model,
            tokenizer,
            max_batch=max_batch,
            max_seq_len=max_seq_len,
            prefill_chunk=prefill_chunk,
            max_queue=max_queue,
        )
    )
    fmt = ChatFormat(tokenizer, python_tag="all_tool_calls")
    runner = tool_runner or ToolRunner()
    metrics = _Metrics(engine)
    created = created or int(time.time())
    V, N, L = engine.args.vocab_size, engine.max_batch, engine.max_seq_len

    @asynccontextmanager
    async def lifespan(app):
        engine.start()
        yield
        engine.close()

    app = FastAPI(title="herd serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine
    app.state.metrics = metrics
    app.add_middleware(_CatchAll)

    def error_response(e: ApiError, endpoint: str = "other") -> JSONResponse:
        metrics.requests.labels(endpoint, str(e.status)).inc()
        headers = {"x-should-retry": "false"} if e.status < 500 else None
        return JSONResponse(e.body(), status_code=e.status, headers=headers)

    @app.exception_handler(ApiError)
    async def _api_error(request, e: ApiError):
        return error_response(e, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request, e):
        return error_response(ApiError(400, f"invalid request: {e.errors()[:1]}"), request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, e):
        msg = {
            404: f"Unknown request URL: {request.method} {request.url.path}.",
            405: f"Method {request.method} not allowed for {request.url.path}.",
        }.get(e.status_code, str(e.detail))
        return error_response(
            ApiError(e.status_code, msg, code={404: "unknown_url"}.get(e.status_code)), request.url.path
        )

    @app.exception_handler(Exception)
    async def _crash(request, e):
        log.error("internal error on %s: %s: %s", request.url.path, type(e).__name__, e)
        return error_response(
            ApiError(500, f"internal error: {type(e).__name__}", type_="server_error"), request.url.path
        )

    # ---- helpers ----------------------------------------------------------------------------------
    def check_auth(request: Request):
        if api_key is None:
            return
        h = request.headers.get("authorization", "")
        given = h[7:].strip() if h[:7].lower() == "bearer " else ""
        if not secrets.compare_digest(given.encode(), api_key.encode()):
            raise ApiError(
                401,
                "Incorrect API key provided. Pass it as 'Authorization: Bearer KEY' (the server's --api-key)."
                if given
                else "You didn't provide an API key. Pass it as "
                "'Authorization: Bearer KEY' (the server's --api-key).",
                code="invalid_api_key",
            )

    async def read_json(request: Request):
        n = request.headers.get("content-length")
        if n is not None and n.isdigit() and int(n) > max_body_bytes:
            raise ApiError(
                413,
                f"The request body is {int(n)} bytes; the limit is {max_body_bytes} bytes.",
                code="request_too_large",
            )
        chunks, size = [], 0
        async for c in request.stream():
            size += len(c)
            if size > max_body_bytes:
                raise ApiError(
                    413,
                    f"The request body is over the limit of {max_body_bytes} bytes.",
                    code="request_too_large",
                )
            chunks.append(c)
        raw = b"".join(chunks)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ApiError(
                400, f"The request body is not valid UTF-8 (byte {e.start}).", code="invalid_json"
            ) from None
        if not text.strip():
            raise ApiError(400, "The request body is empty; send a JSON object.", code="invalid_json")
        try:
            body = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise ApiError(
                400,
                f"We could not parse the JSON body of your request ({str(e)[:120]}). Send valid "
                "JSON with 'Content-Type: application/json'.",
                code="invalid_json",
            ) from None
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
        return body

    def check_model(name: str):
        if name != model_name:
            raise ApiError(
                404,
                f"The model `{name}` does not exist. This server serves `{model_name}`.",
                "model",
                "model_not_found",
            )

    async def moderate(stage: str, *args):
        d = await asyncio.to_thread(getattr(moderation, f"check_{stage}"), *args)
        result = "blocked" if d.blocked else "allowed"
        metrics.moderation.labels(stage, result).inc()
        metrics.moderation_s.labels(stage).observe(float(getattr(d, "latency_s", 0.0) or 0.0))
        log.info(
            "moderation %s: %s%s (%.3fs)",
            stage,
            result,
            f" [{', '.join(d.categories)}] {d.reason}" if d.blocked else "",
            d.latency_s or 0.0,
        )
        return d

    def sampling(p, max_tokens: int) -> SamplingParams:
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=p.temperature,
            top_p=p.top_p,
            top_k=p.top_k,
            seed=p.seed,
            presence_penalty=p.presence_penalty,
            frequency_penalty=p.frequency_penalty,
            logit_bias=p.logit_bias,
            logprobs=p.logprobs,
        )

    def budget(prompt_len: int, max_tokens: int | None) -> int:
        if prompt_len >= L:
            raise ApiError(
                400,
                f"This model's maximum context length is {L} tokens. However, your messages "
                f"resulted in {prompt_len} tokens. Please reduce the length of the messages.",
                "messages",
                "context_length_exceeded",
            )
        if max_tokens is None:
            return L - prompt_len
        if prompt_len + max_tokens > L:
            raise ApiError(
                400,
                f"This model's maximum context length is {L} tokens. However, you requested "
                f"{prompt_len + max_tokens} tokens ({prompt_len} in the messages, {max_tokens} in "
                "the completion). Please reduce the length of the messages or completion.",
                "max_tokens",
                "context_length_exceeded",
            )
        return max_tokens

    class Run:
        """One engine submission; `events()` yields its Events as they come."""

        def __init__(self, prompt, sp, n, request):
            loop = asyncio.get_running_loop()
            self.q: asyncio.Queue = asyncio.Queue()
            self.n, self.request, self.t0 = n, request, time.perf_counter()
            self.first = None
            try:
                self.req = engine.submit(
                    prompt, sp, n, lambda ev: loop.call_soon_threadsafe(self.q.put_nowait, ev)
                )
            except OverflowError as e:
                raise ApiError(503, str(e), code="overloaded") from None
            except HerdError as e:
                raise ApiError(400, str(e)) from None

        async def events(self):
            done = 0
            while done < self.n:
                try:
                    ev = await asyncio.wait_for(self.q.get(), 1.0)
                except asyncio.TimeoutError:
                    if self.request is not None and await self.request.is_disconnected():
                        self.cancel()
                        return
                    continue
                if ev.kind == "token" and self.first is None:
                    self.first = time.perf_counter()
                    metrics.ttft.observe(self.first - self.t0)
                if ev.kind == "error":
                    self.cancel()
                    raise ApiError(503 if "shutting down" in ev.message else 500, ev.message)
                if ev.kind == "done":
                    done += 1
                yield ev

        def cancel(self):
            engine.cancel(self.req)

    def chunk_base(cid, obj):
        return {
            "id": cid,
            "object": obj,
            "created": int(time.time()),
            "model": model_name,
            "system_fingerprint": "herd",
        }

    def sse(d) -> str:
        return f"data: {json.dumps(d, ensure_ascii=False)}\n\n"

    # ---- routes -----------------------------------------------------------------------------------
    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name, "running": engine.running, "queued": engine.queue_depth}

    @app.get("/metrics")
    async def metrics_route():
        return Response(metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/")
    async def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/v1/models")
    async def models(request: Request):
        check_auth(request)
        metrics.requests.labels("/v1/models", "200").inc()
        return {
            "object": "list",
            "data": [
                {
                    "id": model_name,
                    "object": "model",
                    "created": created,
                    "owned_by": "herd",
                    "max_model_len": L,
                }
            ],
        }

    @app.get("/v1/models/{name:path}")
    async def model_info(name: str, request: Request):
        check_auth(request)
        check_model(name)
        return {
            "id": model_name,
            "object": "model",
            "created": created,
            "owned_by": "herd",
            "max_model_len": L,
        }

    # ---- chat -------------------------------------------------------------------------------------
    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        ep = "/v1/chat/completions"
        check_auth(request)
        body = await read_json(request)
        try:
            p = parse_chat(body, V, N, L)
            check_model(p.model)
            herd_msgs = convert_messages(p.messages, p.tools, p.tool_choice, builtin_tools, today)
            prompt = fmt.encode_dialog_prompt(herd_msgs)
        except RequestError as e:
            raise _from_request_error(e) from None
        except HerdError as e:
            raise ApiError(400, str(e), "messages") from None
        max_tokens = budget(len(prompt), p.max_tokens)
        tools_active = any(
            m["role"] == "system" and m["content"].startswith("Environment: ipython") for m in herd_msgs[:1]
        )
        loop_on = tool_loop and p.n == 1 and tools_active
        cid = "chatcmpl-" + uuid.uuid4().hex[:24]
        state = {"prompt_tokens": 0, "completion_tokens": 0}

        blocked = None
        if moderation is not None:
            d = await moderate("input", p.messages)
            if d.blocked:
                blocked = d

        async def generate(msgs, prompt_ids, emit):
            """Run the model on prompt_ids; `emit(choice_index, delta_text)` for streamed text.
            -> list of _Choice."""
            choices = [
                _Choice(i, tokenizer, p.stop, tools_active, tokenizer.python_tag_id) for i in range(p.n)
            ]
            mt = budget(len(prompt_ids), p.max_tokens) if msgs is not herd_msgs else max_tokens
            run = Run(prompt_ids, sampling(p, mt), p.n, None if p.stream else request)
            state["prompt_tokens"] += len(prompt_ids)
            try:
                async for ev in run.events():
                    c = choices[ev.index]
                    if c.finish_reason is not None:
                        continue
                    if ev.kind == "token":
                        c.add_token(ev.token, ev.logprob, ev.top)
                        if c.stop_hit:
                            c.finish("stop")
                            if all(x.finish_reason for x in choices):
                                run.cancel()
                    else:
                        if ev.stop_token is not None:
                            c.completion_tokens += 1
                        c.finish(ev.finish_reason if ev.finish_reason != "cancelled" else "stop")
                    if emit is not None:
                        await emit(c)
            finally:
                if any(c.finish_reason is None for c in choices):
                    run.cancel()
            for c in choices:
                state["completion_tokens"] += c.completion_tokens
            metrics.latency.observe(time.perf_counter() - run.t0)
            return choices

        def parse_calls(c: _Choice):
            if not c.tool_mode:
                return []
            stop = "end_of_message" if c.finish_reason == "stop" else "out_of_tokens"
            msg = fmt.decode_assistant_message(c.tokens, stop)
            return msg["tool_calls"]

        def calls_text(calls) -> str:
            """What output moderation reads of tool calls: the code itself (for Code Shield), else
            the call."""
            return "\n".join(
                c["arguments"]["code"]
                if c["tool_name"] == "code_interpreter"
                else json.dumps({"name": c["tool_name"], "arguments": c["arguments"]}, ensure_ascii=False)
                for c in calls
            )

        async def calls_blocked(calls) -> bool:
            return (
                moderation is not None and (await moderate("output", p.messages, calls_text(calls))).blocked
            )

        def usage():
            pt, ct = state["prompt_tokens"], state["completion_tokens"]
            metrics.prompt_tokens.inc(pt)
            metrics.completion_tokens.inc(ct)
            return {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}

        if not p.stream:
            if blocked is not None:
                metrics.requests.labels(ep, "200").inc()
                return {
                    **chunk_base(cid, "chat.completion"),
                    "choices": [
                        {
                            "index": i,
                            "message": {"role": "assistant", "content": REFUSAL, "refusal": None},
                            "logprobs": None,
                            "finish_reason": "content_filter",
                        }
                        for i in range(p.n)
                    ],
                    "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                }
            msgs, trace = herd_msgs, []
            prompt_ids = prompt
            loop_blocked = False
            while True:
                choices = await generate(msgs, prompt_ids, None)
                c = choices[0]
                calls = parse_calls(c)
                if (
                    loop_on
                    and calls
                    and all(runner.can_run(x) for x in calls)
                    and len(trace) < max_tool_iterations
                ):
                    if await calls_blocked(calls):  # checked before anything runs
                        loop_blocked = True
                        break
                    msgs = msgs + [
                        {
                            "role": "assistant",
                            "content": "",
                            "tool_calls": calls,
                            "stop_reason": "end_of_message",
                        }
                    ]
                    for call, oc in zip(calls, openai_tool_calls(calls)):
                        out = await asyncio.to_thread(runner, call)
                        trace.append(
                            {
                                "id": oc["id"],
                                "name": call["tool_name"],
                                "arguments": oc["function"]["arguments"],
                                "output": out,
                            }
                        )
                        msgs = msgs + [{"role": "ipython", "content": out}]
                    prompt_ids = fmt.encode_dialog_prompt(msgs)
                    continue
                break
            out_choices = []
            for c in choices:
                calls = parse_calls(c)
                msg = {"role": "assistant", "content": c.text, "refusal": None}
                finish = c.finish_reason
                if calls:
                    msg["content"] = None
                    msg["tool_calls"] = openai_tool_calls(calls)
                    finish = "tool_calls"
                if trace:
                    msg["tool_trace"] = trace
                if moderation is not None:
                    d = loop_blocked or (
                        await moderate("output", p.messages, calls_text(calls) if calls else c.text)
                    )
                    if d is True or d.blocked:
                        msg = {"role": "assistant", "content": REFUSAL, "refusal": None}
                        finish = "content_filter"
                out_choices.append(
                    {
                        "index": c.index,
                        "message": msg,
                        "logprobs": _chat_logprobs(tokenizer, c.logprobs) if p.logprobs is not None else None,
                        "finish_reason": finish,
                    }
                )
            metrics.requests.labels(ep, "200").inc()
            return {**chunk_base(cid, "chat.completion"), "choices": out_choices, "usage": usage()}

        # ---- streaming ----
        async def stream():
            base = chunk_base(cid, "chat.completion.chunk")
            extra = {"usage": None} if p.include_usage else {}

            def chunk(i, delta, finish=None, logprobs=None):
                return sse(
                    {
                        **base,
                        "choices": [
                            {"index": i, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
                        ],
                        **extra,
                    }
                )

            out: asyncio.Queue = asyncio.Queue()
            checked = {i: 0 for i in range(p.n)}  # characters of text that passed output moderation
            lp_sent = {i: 0 for i in range(p.n)}
            filtered: set[int] = set()

            async def emit(c: _Choice):
                if c.index in filtered or c.tool_mode or (c.tool_mode is None and c.tools_active):
                    return  # a tool call (or what may become one) is decided at the end
                if moderation is not None:  # hand out text only after its sentence passed the check
                    upto = c.sent
                    if c.finish_reason is not None:
                        upto = len(c.text)
                    else:
                        for m in SENTENCE_END.finditer(c.text, c.sent):
                            upto = m.end()
                    if upto > c.sent:
                        d = await moderate("output", p.messages, c.text[:upto])
                        if d.blocked:
                            filtered.add(c.index)
                            await out.put(chunk(c.index, {"content": REFUSAL}, "content_filter"))
                            return
                        checked[c.index] = upto
                    delta = c.text[c.sent : upto]
                    c.sent = upto
                else:
                    delta = c.take()
                lps = None
                if p.logprobs is not None and len(c.logprobs) > lp_sent[c.index] and not c.tool_mode:
                    lps = _chat_logprobs(tokenizer, c.logprobs[lp_sent[c.index] :])
                    lp_sent[c.index] = len(c.logprobs)
                if delta or lps:
                    await out.put(chunk(c.index, {"content": delta}, None, lps))

            task = None
            try:
                for i in range(p.n):
                    yield chunk(i, {"role": "assistant", "content": ""})
                if blocked is not None:
                    for i in range(p.n):
                        yield chunk(i, {"content": REFUSAL}, "content_filter")
                else:
                    msgs, prompt_ids, n_calls = herd_msgs, prompt, 0
                    while True:
                        task = asyncio.ensure_future(generate(msgs, prompt_ids, emit))
                        while not task.done() or not out.empty():
                            getter = asyncio.ensure_future(out.get())
                            await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
                            if getter.done():
                                yield getter.result()
                            else:
                                getter.cancel()
                        choices = task.result()
                        more = False
                        for c in choices:
                            if c.index in filtered:
                                continue
                            calls = parse_calls(c)
                            if calls and await calls_blocked(calls):
                                yield chunk(c.index, {"content": REFUSAL}, "content_filter")
                                continue
                            if calls:
                                ocs = openai_tool_calls(calls)
                                for k, oc in enumerate(ocs):  # the name first, then the arguments
                                    yield chunk(
                                        c.index,
                                        {
                                            "tool_calls": [
                                                {
                                                    "index": n_calls + k,
                                                    "id": oc["id"],
                                                    "type": "function",
                                                    "function": {
                                                        "name": oc["function"]["name"],
                                                        "arguments": "",
                                                    },
                                                }
                                            ]
                                        },
                                    )
                                    yield chunk(
                                        c.index,
                                        {
                                            "tool_calls": [
                                                {
                                                    "index": n_calls + k,
                                                    "function": {"arguments": oc["function"]["arguments"]},
                                                }
                                            ]
                                        },
                                    )
                                if (
                                    loop_on
                                    and all(runner.can_run(x) for x in calls)
                                    and n_calls < max_tool_iterations
                                ):
                                    msgs = msgs + [
                                        {
                                            "role": "assistant",
                                            "content": "",
                                            "tool_calls": calls,
                                            "stop_reason": "end_of_message",
                                        }
                                    ]
                                    for call, oc in zip(calls, ocs):
                                        res = await asyncio.to_thread(runner, call)
                                        yield chunk(
                                            c.index,
                                            {
                                                "tool_result": {
                                                    "tool_call_id": oc["id"],
                                                    "name": call["tool_name"],
                                                    "content": res,
                                                }
                                            },
                                        )
                                        msgs = msgs + [{"role": "ipython", "content": res}]
                                    n_calls += len(calls)
                                    prompt_ids = fmt.encode_dialog_prompt(msgs)
                                    more = True
                                    continue
                                yield chunk(c.index, {}, "tool_calls")
                            else:
                                rest = c.text[c.sent :]
                                if rest and c.tool_mode and moderation is not None:
                                    d = await moderate("output", p.messages, c.text)
                                    if d.blocked:
                                        yield chunk(c.index, {"content": REFUSAL}, "content_filter")
                                        continue
                                c.sent = len(c.text)
                                if rest:
                                    yield chunk(c.index, {"content": rest})
                                yield chunk(c.index, {}, c.finish_reason)
                        if not more:
                            break
                if p.include_usage:
                    yield sse({**base, "choices": [], "usage": usage()})
                elif blocked is None:
                    usage()
                metrics.requests.labels(ep, "200").inc()
                yield "data: [DONE]\n\n"
            except ApiError as e:
                metrics.requests.labels(ep, str(e.status)).inc()
                yield sse(e.body())
                yield "data: [DONE]\n\n"
            except Exception as e:  # noqa: BLE001  (a bug: one line in the log, an error event to the client)
                log.error("internal error in a stream on %s: %s: %s", ep, type(e).__name__, e)
                metrics.requests.labels(ep, "500").inc()
                yield sse(error_body(f"internal error: {type(e).__name__}", "server_error"))
                yield "data: [DONE]\n\n"
            finally:  # the client left (or anything else): stop generating, free the slots
                if task is not None and not task.done():
                    task.cancel()

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # ---- completions ------------------------------------------------------------------------------
    @app.post("/v1/completions")
    async def completions(request: Request):
        ep = "/v1/completions"
        check_auth(request)
        body = await read_json(request)
        try:
            p = parse_completion(body, V, N, L)
        except RequestError as e:
            raise _from_request_error(e) from None
        check_model(p.model)
        pr = p.prompt
        if isinstance(pr, str) or isinstance(pr[0], int):
            prompts = [pr]
        else:
            prompts = pr
        encoded = []
        for x in prompts:
            if isinstance(x, str):
                encoded.append(tokenizer.encode(x, bos=True))
            else:
                if any(not 0 <= t < V for t in x):
                    raise ApiError(
                        400,
                        f"Invalid value for 'prompt': token ids must be in [0, {V}).",
                        "prompt",
                        "invalid_value",
                    )
                encoded.append(list(x))
        mts = [budget(len(e), p.max_tokens) for e in encoded]
        if len(prompts) * p.n > N * 8:
            raise ApiError(
                400, f"Too many sequences in one request ({len(prompts)} prompts x n={p.n}).", "prompt"
            )
        cid = "cmpl-" + uuid.uuid4().hex[:24]
        if moderation is not None:
            for x in prompts:
                text = x if isinstance(x, str) else tokenizer.decode(x)
                d = await moderate("input", [{"role": "user", "content": text}])
                if d.blocked:
                    raise ApiError(
                        400,
                        f"The prompt was blocked by the input shield ({d.reason}).",
                        "prompt",
                        "content_filter",
                    )
        echo_text = [(x if isinstance(x, str) else tokenizer.decode(x)) if p.echo else "" for x in prompts]
        q: asyncio.Queue = asyncio.Queue()
        usage = {"prompt_tokens": sum(len(e) for e in encoded), "completion_tokens": 0}

        async def one(k, e, mt):
            choices = [_Choice(k * p.n + i, tokenizer, p.stop, False, -1) for i in range(p.n)]
            run = Run(e, sampling(p, mt), p.n, None if p.stream else request)
            try:
                async for ev in run.events():
                    c = choices[ev.index]
                    if c.finish_reason is not None:
                        continue
                    if ev.kind == "token":
                        c.add_token(ev.token, ev.logprob, ev.top)
                        if c.stop_hit:
                            c.finish("stop")
                            if all(x.finish_reason for x in choices):
                                run.cancel()
                    else:
                        if ev.stop_token is not None:
                            c.completion_tokens += 1
                        c.finish(ev.finish_reason if ev.finish_reason != "cancelled" else "stop")
                    await q.put(c)
            finally:
                if any(c.finish_reason is None for c in choices):
                    run.cancel()
            usage["completion_tokens"] += sum(c.completion_tokens for c in choices)
            metrics.latency.observe(time.perf_counter() - run.t0)
            return choices

        tasks = [asyncio.ensure_future(one(k, e, mt)) for k, (e, mt) in enumerate(zip(encoded, mts))]

        def finish_usage():
            pt, ct = usage["prompt_tokens"], usage["completion_tokens"]
            metrics.prompt_tokens.inc(pt)
            metrics.completion_tokens.inc(ct)
            return {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}

        if not p.stream:
            try:
                results = await asyncio.gather(*tasks)
            except BaseException:
                for t in tasks:
                    t.cancel()
                raise
            out = []
            for k, choices in enumerate(results):
                for c in choices:
                    lps = None
                    if p.logprobs is not None:
                        lps = _completion_logprobs(tokenizer, c.logprobs, len(echo_text[k]))
                    out.append(
                        {
                            "text": echo_text[k] + c.text,
                            "index": c.index,
                            "logprobs": lps,
                            "finish_reason": c.finish_reason,
                        }
                    )
            metrics.requests.labels(ep, "200").inc()
            return {**chunk_base(cid, "text_completion"), "choices": out, "usage": finish_usage()}

        async def stream():
            base = chunk_base(cid, "text_completion")
            extra = {"usage": None} if p.include_usage else {}
            lp_sent: dict[int, int] = {}
            offs: dict[int, int] = {}
            echoed: set[int] = set()

            def chunk(c, text, finish=None, lps=None):
                return sse(
                    {
                        **base,
                        "choices": [
                            {"text": text, "index": c.index, "logprobs": lps, "finish_reason": finish}
                        ],
                        **extra,
                    }
                )

            try:
                gather = asyncio.ensure_future(asyncio.gather(*tasks))
                while not gather.done() or not q.empty():
                    getter = asyncio.ensure_future(q.get())
                    await asyncio.wait({gather, getter}, return_when=asyncio.FIRST_COMPLETED)
                    if not getter.done():
                        getter.cancel()
                        continue
                    c = getter.result()
                    k = c.index // p.n
                    text = c.take()
                    if c.index not in echoed:
                        echoed.add(c.index)
                        text = echo_text[k] + text
                        offs[c.index] = len(echo_text[k])
                    lps = None
                    if p.logprobs is not None and len(c.logprobs) > lp_sent.get(c.index, 0):
                        lps = _completion_logprobs(
                            tokenizer, c.logprobs[lp_sent.get(c.index, 0) :], offs[c.index]
                        )
                        lp_sent[c.index] = len(c.logprobs)
                        offs[c.index] += sum(len(s) for s in lps["tokens"])
                    if text or lps or c.finish_reason:
                        yield chunk(c, text, c.finish_reason, lps)
                gather.result()
                if p.include_usage:
                    yield sse({**base, "choices": [], "usage": finish_usage()})
                else:
                    finish_usage()
                metrics.requests.labels(ep, "200").inc()
                yield "data: [DONE]\n\n"
            except ApiError as e:
                metrics.requests.labels(ep, str(e.status)).inc()
                yield sse(e.body())
                yield "data: [DONE]\n\n"
            except Exception as e:  # noqa: BLE001  (a bug: one line in the log, an error event to the client)
                log.error("internal error in a stream on %s: %s: %s", ep, type(e).__name__, e)
                metrics.requests.labels(ep, "500").inc()
                yield sse(error_body(f"internal error: {type(e).__name__}", "server_error"))
                yield "data: [DONE]\n\n"
            finally:
                for t in tasks:
                    t.cancel()

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.api_route("/v1/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def unknown_url(rest: str, request: Request):
        check_auth(request)
        raise ApiError(404, f"Unknown request URL: {request.method} /v1/{rest}.", code="unknown_url")

    return app


__all__ = ["ApiError", "create_app"]
