"""KFServing's API group, ``serving.kubeflow.org/v1beta1``, served as an alias of KServe's.

KServe is KFServing renamed (kserve#1613): the v1beta1 InferenceService is the same type
under a new group. Clients and manifests written for KFServing (the seed creates "a KFServing
service" from a notebook) still name ``serving.kubeflow.org/v1beta1``. Rather than a second
kind with its own table, events and controller, the alias is a view of the same objects:
this ASGI middleware rewrites the request's path (and the ``apiVersion`` of its body) to the
KServe group before the resource routes see it, and rewrites every ``apiVersion`` of the
answer (an object, a list, a Table's rows, each line of a watch) back to the alias. So an
object created through either group is read, patched, watched and deleted through both, and
each reader sees the group it asked for, as with a Kubernetes API served in two groups.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

KSERVE = "serving.kserve.io/v1beta1"
KFSERVING = "serving.kubeflow.org/v1beta1"
_ALIAS_PREFIX = "/apis/serving.kubeflow.org/v1beta1"
_KSERVE_PREFIX = "/apis/serving.kserve.io/v1beta1"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# A YAML body's top-level apiVersion (kubectl and the shipyard CLI send JSON; curl may not).
_YAML_API_VERSION = re.compile(rb"^(apiVersion:[ \t]*[\"']?)serving\.kubeflow\.org/v1beta1", re.M)


def _to_alias(value: Any) -> Any:
    """``value`` with every ``apiVersion: serving.kserve.io/v1beta1`` (at any depth) aliased."""
    if isinstance(value, dict):
        out = {k: _to_alias(v) for k, v in value.items()}
        if out.get("apiVersion") == KSERVE:
            out["apiVersion"] = KFSERVING
        return out
    if isinstance(value, list):
        return [_to_alias(v) for v in value]
    return value


def request_body_to_kserve(body: bytes, content_type: str) -> bytes:
    """A create, replace or patch body sent to the alias, with its apiVersion in KServe's
    group; anything unparseable passes unchanged (the resource route answers its 400)."""
    if "yaml" in content_type:
        return _YAML_API_VERSION.sub(rb"\1" + KSERVE.encode(), body)
    try:
        doc = json.loads(body)
    except ValueError:
        return body
    if isinstance(doc, dict) and doc.get("apiVersion") == KFSERVING:
        doc["apiVersion"] = KSERVE
    elif isinstance(doc, list):  # RFC 6902 JSON patch: an op that sets the apiVersion
        for op in doc:
            if isinstance(op, dict) and op.get("path") == "/apiVersion":
                if op.get("value") == KFSERVING:
                    op["value"] = KSERVE
    else:
        return body
    return json.dumps(doc, separators=(",", ":")).encode()


def response_to_alias(body: bytes) -> bytes:
    """One JSON document (or one watch line) of the answer, with the alias's apiVersion."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body
    return json.dumps(_to_alias(doc), separators=(",", ":")).encode()


class KFServingAlias:
    """Serve ``/apis/serving.kubeflow.org/v1beta1/...`` as ``/apis/serving.kserve.io/...``."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (
            path == _ALIAS_PREFIX or path.startswith(_ALIAS_PREFIX + "/")
        ):
            await self.app(scope, receive, send)
            return
        new_path = _KSERVE_PREFIX + path[len(_ALIAS_PREFIX) :]
        scope = {**scope, "path": new_path, "raw_path": new_path.encode()}
        if scope["method"] in _BODY_METHODS:
            receive = await self._aliased_body(scope, receive)
        await self.app(scope, receive, _AliasedResponse(send))

    async def _aliased_body(self, scope: Scope, receive: Receive) -> Receive:
        """Read the body (up to the size limit) and hand on its KServe spelling. A larger
        body is handed on as it came: the resource route refuses it with its 413."""
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return _replay([message], receive)
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = bool(message.get("more_body"))
            if size > self.max_body_bytes and more:
                pending = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
                return _replay(pending, receive)
        ctype = ""
        for key, value in scope.get("headers", []):
            if key == b"content-type":
                ctype = value.decode("latin-1")
        body = request_body_to_kserve(b"".join(chunks), ctype)
        return _replay([{"type": "http.request", "body": body, "more_body": False}], receive)


def _replay(messages: Sequence[Message], receive: Receive) -> Receive:
    """A ``receive`` that gives ``messages`` first, then reads on."""
    queue = list(messages)

    async def replayed() -> Message:
        if queue:
            return queue.pop(0)
        return await receive()

    return replayed


class _AliasedResponse:
    """A ``send`` that rewrites JSON answers: a whole body (its length fixed up), or a
    streamed watch line by line as each line completes."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.start: Message | None = None
        self.json = False
        self.streamed = False
        self.buffer = b""

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            ctype = next((v for k, v in headers if k.lower() == b"content-type"), b"")
            self.json = b"json" in ctype
            self.streamed = not any(k.lower() == b"content-length" for k, _ in headers)
            if not self.json:
                await self.send(message)
                return
            kept = [(k, v) for k, v in headers if k.lower() != b"content-length"]
            self.start = {**message, "headers": kept}
            if self.streamed:
                await self.send(self.start)
            return
        if message["type"] != "http.response.body" or not self.json:
            await self.send(message)
            return
        self.buffer += message.get("body", b"")
        more = bool(message.get("more_body"))
        if self.streamed:
            await self._send_lines(more)
            return
        if more:
            return
        body = response_to_alias(self.buffer)
        assert self.start is not None
        headers = [*self.start["headers"], (b"content-length", str(len(body)).encode())]
        await self.send({**self.start, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})

    async def _send_lines(self, more: bool) -> None:
        *lines, self.buffer = self.buffer.split(b"\n")
        if not more and self.buffer:
            lines, self.buffer = [*lines, self.buffer], b""
        out = b"".join(response_to_alias(line) + b"\n" for line in lines if line.strip())
        if out or not more:
            await self.send({"type": "http.response.body", "body": out, "more_body": more})
