"""OpenAI-compatible endpoints of the model server, as KServe's huggingfaceserver serves them
under ``/openai``: ``POST /openai/v1/completions``, ``POST /openai/v1/chat/completions``
(each plain or, with ``"stream": true``, server-sent events of chunks ending ``data: [DONE]``),
``GET /openai/v1/models`` and ``GET /openai/v1/models/{model}``.

A text-generation model (:class:`.huggingface.HuggingFaceModel` with task ``text_generation``)
generates; any other model is listed but a completion asked of it is a 400. Inputs are bounded
before anything runs (the body, the prompt's characters, the number of prompts, ``max_tokens``
against the cap and the context left after the prompt) and refused in OpenAI's error shape,
``{"error": {"message", "type", "param", "code"}}`` (KServe's types: ``BadRequestError``...).
Greedy decoding unless ``temperature`` > 0; ``n`` > 1 is refused, as KServe does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from .huggingface import GENERATION, Generation, SamplingParams, cut_at_stop
from .loaders import Model

log = logging.getLogger(__name__)

PREFIX = "/openai/v1"
MAX_REQUEST_BYTES = 4 * 1024 * 1024
MAX_PROMPT_CHARS = 100_000
MAX_PROMPTS = 16
MAX_STOP = 4
OWNED_BY = "shipyard"


class OpenAIError(Exception):
    """A request refused: its message, HTTP status and the offending parameter."""

    def __init__(self, message: str, status: int = 400, param: str = "") -> None:
        super().__init__(message)
        self.status, self.param = status, param


ERROR_TYPES = {400: "BadRequestError", 404: "NotFoundError", 413: "BadRequestError"}


def error_body(exc: OpenAIError) -> dict[str, Any]:
    error = {
        "message": str(exc),
        "type": ERROR_TYPES.get(exc.status, "InternalServerError"),
        "param": exc.param,
        "code": str(exc.status),
    }
    return {"error": error}


def error_response(exc: OpenAIError) -> Response:
    return _json(error_body(exc), exc.status)


def _json(doc: Any, status: int = 200) -> Response:
    return Response(
        json.dumps(doc, separators=(",", ":")), status_code=status, media_type="application/json"
    )


# -- request parsing -----------------------------------------------------------------------


async def read_request(request: Request) -> dict[str, Any]:
    body = await request.body()
    if len(body) > MAX_REQUEST_BYTES:
        raise OpenAIError(f"request body over {MAX_REQUEST_BYTES} bytes", 413)
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise OpenAIError(f"request body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise OpenAIError("request body must be a JSON object")
    return doc


def _number(doc: dict[str, Any], key: str, low: float, high: float) -> float | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise OpenAIError(f"{key} must be a number from {low} to {high}", param=key)
    return float(value)


def _stop(doc: dict[str, Any]) -> list[str]:
    stop = doc.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise OpenAIError("stop must be a string or a list of non-empty strings", param="stop")
    if len(stops) > MAX_STOP:
        raise OpenAIError(f"stop takes at most {MAX_STOP} sequences", param="stop")
    return stops


def sampling(doc: dict[str, Any], cap: int, max_tokens_key: str = "max_tokens") -> dict[str, Any]:
    """The sampling fields of a request, checked (max_tokens at most ``cap``; it is settled
    per prompt)."""
    if doc.get("n") not in (None, 1):
        raise OpenAIError("'n' > 1 is not supported", param="n")
    if not isinstance(doc.get("stream", False), bool):
        raise OpenAIError("stream must be a boolean", param="stream")
    max_tokens = doc.get(max_tokens_key)
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise OpenAIError(f"{max_tokens_key} must be a positive integer", param=max_tokens_key)
        if max_tokens > cap:
            raise OpenAIError(
                f"{max_tokens_key} {max_tokens} is over this server's cap of {cap} tokens",
                param=max_tokens_key,
            )
    seed = doc.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise OpenAIError("seed must be an integer", param="seed")
    return {
        "max_tokens": max_tokens,
        "temperature": _number(doc, "temperature", 0, 2),
        "top_p": _number(doc, "top_p", 0, 1),
        "seed": seed,
        "stop": _stop(doc),
    }


def completion_prompts(model: Any, doc: dict[str, Any]) -> list[list[int]]:
    """The prompts of a completion request as token ids: a string, a list of strings, a
    list of token ids, or a list of those."""
    prompt = doc.get("prompt")
    if isinstance(prompt, str) or (
        isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt)
    ):
        prompts: list[Any] = [prompt]
    elif isinstance(prompt, list) and prompt:
        prompts = prompt
    else:
        raise OpenAIError("prompt is required: a string, or a list of them", param="prompt")
    if len(prompts) > MAX_PROMPTS:
        raise OpenAIError(f"at most {MAX_PROMPTS} prompts in one request", param="prompt")
    out = []
    vocab = model.vocab_size
    for p in prompts:
        if isinstance(p, str):
            ids = model.encode(_bounded(p, "prompt"))
        elif isinstance(p, list) and p and all(isinstance(t, int) for t in p):
            if not all(0 <= t < vocab for t in p):
                raise OpenAIError(f"token ids run from 0 to {vocab - 1}", param="prompt")
            ids = list(p)
        else:
            raise OpenAIError("each prompt is a string or a list of token ids", param="prompt")
        if not ids:
            raise OpenAIError("the prompt is empty: it has no tokens", param="prompt")
        out.append(ids)
    return out


def _bounded(text: str, param: str) -> str:
    if len(text) > MAX_PROMPT_CHARS:
        raise OpenAIError(
            f"{param} has {len(text)} characters; at most {MAX_PROMPT_CHARS}", param=param
        )
    return text


def chat_messages(doc: dict[str, Any]) -> list[dict[str, str]]:
    """The chat's messages as role and text (content parts of type text are joined)."""
    messages = doc.get("messages")
    if not isinstance(messages, list) or not messages:
        raise OpenAIError("messages is required: a non-empty list", param="messages")
    out, total = [], 0
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise OpenAIError(f"messages[{i}] needs a role", param=f"messages[{i}].role")
        content = m.get("content")
        if isinstance(content, list):
            parts = [p.get("text") for p in content if isinstance(p, dict)]
            if len(parts) != len(content) or not all(isinstance(p, str) for p in parts):
                raise OpenAIError(
                    f"messages[{i}].content: only text parts are supported",
                    param=f"messages[{i}].content",
                )
            content = "".join(parts)  # type: ignore[arg-type]
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise OpenAIError(
                f"messages[{i}].content must be a string", param=f"messages[{i}].content"
            )
        total += len(content)
        out.append({"role": m["role"], "content": content})
    if total > MAX_PROMPT_CHARS:
        raise OpenAIError(
            f"messages have {total} characters; at most {MAX_PROMPT_CHARS}", param="messages"
        )
    return out


def params_for(model: Any, ids: list[int], fields: dict[str, Any], param: str) -> SamplingParams:
    """The sampling parameters of one prompt: max_tokens defaults to the context left (capped),
    and prompt plus completion must fit the context (KServe's message)."""
    room = model.max_length - len(ids)
    wanted = fields["max_tokens"]
    if wanted is None:
        wanted = min(room, model.max_tokens_cap)
    if room < 1 or len(ids) + wanted > model.max_length:
        raise OpenAIError(
            f"This model's maximum context length is {model.max_length} tokens. However, you "
            f"requested {len(ids) + wanted} tokens ({len(ids)} in the messages, {wanted} in the "
            "completion). Please reduce the length of the messages or completion.",
            param=param,
        )
    return SamplingParams(
        max_new_tokens=wanted,
        temperature=fields["temperature"],
        top_p=fields["top_p"],
        seed=fields["seed"],
        stop=fields["stop"],
    )


# -- generation ----------------------------------------------------------------------------


def _held_back(text: str, stop: list[str]) -> str:
    """``text`` less a tail that may be the start of a stop sequence still arriving."""
    hold = 0
    for s in stop:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                hold = max(hold, k)
                break
    return text[: len(text) - hold]


async def stream_text(
    model: Any, ids: list[int], params: SamplingParams, done: Callable[[Generation], None]
) -> AsyncGenerator[str, None]:
    """The generated text in pieces as tokens come (a piece is held while it ends inside a
    character or may be starting a stop sequence); ``done`` gets the whole generation."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[int | None] = asyncio.Queue()

    def on_token(token: int) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, token)

    cancel = threading.Event()
    params = dataclasses.replace(params, cancel=cancel)
    task = asyncio.ensure_future(asyncio.to_thread(model.generate, ids, params, on_token))
    task.add_done_callback(lambda _: queue.put_nowait(None))
    tokens: list[int] = []
    sent = ""
    try:
        while (token := await queue.get()) is not None:
            tokens.append(token)
            visible, stopped = cut_at_stop(model.decode(tokens), params.stop)
            safe = visible if stopped else _held_back(visible, params.stop)
            if safe.endswith("\ufffd") or len(safe) <= len(sent) or not safe.startswith(sent):
                continue
            yield safe[len(sent) :]
            sent = safe
    finally:  # the reader went away (or all was read): a generation left running ends
        cancel.set()
    result = task.result()
    if result.text.startswith(sent) and len(result.text) > len(sent):
        yield result.text[len(sent) :]
    done(result)


def usage(prompt_tokens: int, results: list[Generation]) -> dict[str, int]:
    completion = sum(len(r.token_ids) for r in results)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
    }


def sse(doc: Any) -> str:
    return f"data: {json.dumps(doc, separators=(',', ':'))}\n\n"


class Completions:
    """The completion and chat completion handlers of one generating model."""

    def __init__(self, model: Any) -> None:
        self.model = model

    async def complete(self, doc: dict[str, Any]) -> Response:
        fields = sampling(doc, self.model.max_tokens_cap)
        prompts = completion_prompts(self.model, doc)
        plans = [(ids, params_for(self.model, ids, fields, "prompt")) for ids in prompts]
        echo = bool(doc.get("echo"))
        base: dict[str, Any] = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion"}
        base |= {"created": int(time.time()), "model": self.model.name}
        prompt_tokens = sum(len(ids) for ids in prompts)
        if doc.get("stream"):
            return self._stream(plans, base, prompt_tokens, _include_usage(doc), chat=False)
        results = [await asyncio.to_thread(self.model.generate, i, p) for i, p in plans]
        choices = [
            {
                "index": n,
                "text": (self.model.decode(ids) if echo else "") + r.text,
                "logprobs": None,
                "finish_reason": r.finish_reason,
            }
            for n, ((ids, _), r) in enumerate(zip(plans, results, strict=True))
        ]
        return _json({**base, "choices": choices, "usage": usage(prompt_tokens, results)})

    async def chat(self, doc: dict[str, Any]) -> Response:
        key = "max_completion_tokens" if "max_completion_tokens" in doc else "max_tokens"
        fields = sampling(doc, self.model.max_tokens_cap, key)
        messages = chat_messages(doc)
        try:
            prompt = self.model.chat_prompt(messages)
        except Exception as exc:  # the template's own (jinja) errors: what was sent misfits
            raise OpenAIError(f"the chat template failed: {exc}", param="messages") from None
        ids = self.model.encode(prompt)
        params = params_for(self.model, ids, fields, "messages")
        base: dict[str, Any] = {"id": f"chatcmpl-{uuid.uuid4().hex}"}
        base["created"] = int(time.time())
        base["model"] = self.model.name
        if doc.get("stream"):
            return self._stream([(ids, params)], base, len(ids), _include_usage(doc), chat=True)
        result = await asyncio.to_thread(self.model.generate, ids, params)
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": result.text},
            "logprobs": None,
            "finish_reason": result.finish_reason,
        }
        body = {**base, "object": "chat.completion", "choices": [choice]}
        return _json({**body, "usage": usage(len(ids), [result])})

    def _stream(
        self,
        plans: list[tuple[list[int], SamplingParams]],
        base: dict[str, Any],
        prompt_tokens: int,
        include_usage: bool,
        chat: bool,
    ) -> Response:
        if chat:
            base = {**base, "object": "chat.completion.chunk"}

        def chunk(index: int, text: str | None, finish: str | None) -> str:
            if chat:
                delta = {} if text is None else {"content": text}
                if text == "" and finish is None:
                    delta["role"] = "assistant"
                body = {"index": index, "delta": delta, "logprobs": None}
            else:
                body = {"index": index, "text": text or "", "logprobs": None}
            return sse({**base, "choices": [{**body, "finish_reason": finish}]})

        async def events() -> AsyncIterator[str]:
            results: list[Generation] = []
            try:
                for index, (ids, params) in enumerate(plans):
                    if chat:
                        yield chunk(index, "", None)
                    async for piece in stream_text(self.model, ids, params, results.append):
                        yield chunk(index, piece, None)
                    yield chunk(index, None, results[-1].finish_reason)
            except Exception as exc:  # the status was sent: the error is the last event
                log.exception("generation failed")
                yield sse(error_body(OpenAIError(f"generation failed: {exc}", 500)))
            else:
                if include_usage:
                    yield sse({**base, "choices": [], "usage": usage(prompt_tokens, results)})
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")


def _include_usage(doc: dict[str, Any]) -> bool:
    options = doc.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def add_openai_routes(app: FastAPI, model: Model, started: int | None = None) -> None:
    """Mount the OpenAI-compatible routes for ``model`` on ``app``."""
    created = started or int(time.time())
    name = model.name
    generates = getattr(model, "task", None) == GENERATION
    handlers = Completions(model)
    card = {"id": name, "object": "model", "created": created, "owned_by": OWNED_BY}

    def check(doc: dict[str, Any]) -> None:
        requested = doc.get("model")
        if not isinstance(requested, str) or not requested:
            raise OpenAIError("model is required", param="model")
        if requested != name:
            raise OpenAIError(f"The model `{requested}` does not exist.", 404, "model")
        if not generates:
            task = getattr(model, "task", "a non-generative")
            raise OpenAIError(f"model {name} is a {task} model; it does not generate text")

    async def run(request: Request, handler: Callable[[dict[str, Any]], Any]) -> Response:
        try:
            doc = await read_request(request)
            check(doc)
            return await handler(doc)  # type: ignore[no-any-return]
        except OpenAIError as exc:
            return error_response(exc)
        except ValueError as exc:
            return error_response(OpenAIError(str(exc)))
        except Exception as exc:
            log.exception("completion failed")
            return error_response(OpenAIError(f"generation failed: {exc}", 500))

    @app.post(f"{PREFIX}/completions")
    async def create_completion(request: Request) -> Response:
        return await run(request, handlers.complete)

    @app.post(f"{PREFIX}/chat/completions")
    async def create_chat_completion(request: Request) -> Response:
        return await run(request, handlers.chat)

    @app.get(f"{PREFIX}/models")
    async def list_models() -> Response:
        return _json({"object": "list", "data": [card]})

    @app.get(f"{PREFIX}/models/{{model_name}}")
    async def read_model(model_name: str) -> Response:
        if model_name != name:
            missing = OpenAIError(f"The model `{model_name}` does not exist.", 404, "model")
            return error_response(missing)
        return _json(card)
