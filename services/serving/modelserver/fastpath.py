"""The data plane's ASGI entry: ``POST .../v2/models/{m}[/versions/{v}]/infer`` and
``POST .../v1/models/{m}:predict``, answered without a router.

A small request spends most of its time outside the model: FastAPI's routing, dependency
resolution and request/response objects cost several times a scikit-learn ``predict`` on one
row. This layer matches the two inference paths with one string split, reads the body,
calls :mod:`.handlers` and sends the bytes (another method on those paths is a 405);
every other path (health, metadata, the model list) goes on to the routed app. It serves
under the path prefix as well as at the root, like the routed app (the gateway forwards
``/serving/{ns}/{name}/...``). The server's protocol (:mod:`.protocol`) answers most of these
requests before they become ASGI requests, with ``answerer``; the rest come here.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import handlers
from .batcher import ModelBatcher
from .loaders import Model

#: An inference request's answer from its body, ``content-encoding`` and
#: ``inference-header-content-length`` (both "" / None when absent).
Answerer = Callable[[bytes, str, str | None], handlers.Answer]


class InferFastPath:
    """Answers the inference POSTs for ``model``; passes every other request to ``app``."""

    def __init__(
        self, app: ASGIApp, model: Model, batcher: ModelBatcher | None, prefix: str = ""
    ) -> None:
        self.app = app
        self.model = model
        self.batcher = batcher
        self.prefix = prefix.rstrip("/")

    def _route(self, path: str) -> tuple[str, str] | None:
        """("v1"|"v2", model name) for an inference path, else None."""
        if self.prefix and path.startswith(self.prefix + "/"):
            path = path[len(self.prefix) :]
        parts = path.split("/")
        # ['', 'v2', 'models', m, 'infer'] or [..., m, 'versions', v, 'infer']
        if len(parts) in (5, 7) and parts[1] == "v2" and parts[2] == "models":
            if parts[-1] == "infer" and (len(parts) == 5 or parts[4] == "versions"):
                return "v2", parts[3]
            return None
        if len(parts) == 4 and parts[1] == "v1" and parts[2] == "models":
            name, sep, verb = parts[3].rpartition(":")
            if sep and verb == "predict":
                return "v1", name
        return None

    def answerer(self, method: bytes, raw_path: bytes) -> Answerer | None:
        """For the protocol (:mod:`.protocol`): the inference request's answer as a function
        of its body and headers when it can be made with no await (a POST to this model,
        called inline, unbatched), else None: the request goes the ASGI way."""
        if (
            method != b"POST"
            or b"%" in raw_path
            or not handlers.answers_now(self.model, self.batcher)
        ):
            return None
        route = self._route(raw_path.decode("ascii", "replace"))
        if route is None or route[1] != self.model.name:
            return None
        model = self.model
        if route[0] == "v1":
            return lambda body, encoding, _: handlers.predict_v1_now(model, body, encoding)
        return lambda body, encoding, length: handlers.infer_v2_now(model, body, length, encoding)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._route(scope["path"]) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        protocol, name = route
        body = await _read_body(receive)
        if scope["method"] != "POST":
            answer = handlers.error(f"method {scope['method']} not allowed on {scope['path']}", 405)
        elif body is None:
            answer = handlers.TOO_LARGE
        elif name != self.model.name:
            answer = handlers.unknown_model(name)
        else:
            encoding = header_length = None
            for key, value in scope["headers"]:
                if key == b"content-encoding":
                    encoding = value.decode("latin-1")
                elif key == b"inference-header-content-length":
                    header_length = value.decode("latin-1")
            if protocol == "v2":
                answer = await handlers.infer_v2(
                    self.model, self.batcher, body, header_length, encoding or ""
                )
            else:
                answer = await handlers.predict_v1(self.model, self.batcher, body, encoding or "")
        await send_answer(send, answer)


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None once it passes MAX_BODY."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Message = await receive()
        if message["type"] != "http.request":  # the client went away
            return b""
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > handlers.MAX_BODY:
                return None
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_answer(send: Send, answer: handlers.Answer) -> None:
    headers = [
        (b"content-type", answer.media_type.encode()),
        (b"content-length", str(len(answer.body)).encode()),
    ]
    headers += [(k.encode(), v.encode()) for k, v in answer.headers.items()]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})
