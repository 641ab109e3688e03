"""``inference.GRPCInferenceService`` (the Open Inference Protocol over gRPC) on the gateway.

The gateway listens for gRPC on its own port (``SHIPYARD_GATEWAY_GRPC_PORT``, h2c; served by
``gateway.grpc_server``) and routes each call to an InferenceService as KServe does, by host
name: the ``:authority`` ``{name}.{namespace}.{SHIPYARD_INGRESS_DOMAIN}``, or the metadata
``x-shipyard-inferenceservice: {namespace}/{name}`` (which wins when both are given).

Every call is authenticated and authorized exactly as a REST request to
``/serving/{namespace}/{name}/...``: the same authenticator reads the ``authorization``
metadata (``Bearer <token>``; trusted-header mode reads ``kubeflow-userid`` from a trusted
peer), the same authorizer wants the ``edit`` role in the namespace (so a tenant cannot reach
another namespace's model), the same endpoint lookup holds a call for a scaled-to-zero service
while it is activated, and the same activity counters report the traffic. Then the call is
answered from the model server's V2 REST API (``gateway.grpc_tensors`` converts ModelInfer),
so any V2 REST server works behind it and a workload needs one port. Failures are gRPC status
codes: UNAUTHENTICATED, PERMISSION_DENIED, NOT_FOUND (no such InferenceService or model),
INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL.

``ModelStreamInfer`` (Triton's bidirectional stream, which tritonclient's ``start_stream``
opens) is authorized once, when the stream opens, like a unary call; then each request message
is inferred as ``ModelInfer`` would, up to ``MAX_IN_FLIGHT`` at once, and answered in order as
a ``ModelStreamInferResponse``: a failed request is its ``error_message`` and the stream goes on.

The generated messages live in the ``inference`` protobuf package, as do tritonclient's:
one process cannot import both, so only the gateway's gRPC listener imports this module.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

from starlette.requests import HTTPConnection

from services.common.eventspb.inference import grpc_predict_v2_pb2 as pb

from . import routes
from .auth import AuthError
from .errors import DataPlaneError, GatewayError
from .fastpath import ProxyFastPath
from .grpc_server import Call, Code, GRPCError, StreamHandler, start_server
from .grpc_tensors import HEADER_LENGTH, fill_response, rest_request
from .upstream import UpstreamError, UpstreamTimeout

log = logging.getLogger(__name__)

SERVICE = "/inference.GRPCInferenceService/"
TARGET_METADATA = "x-shipyard-inferenceservice"
STREAM_INFER = SERVICE + "ModelStreamInfer"
#: A stream's requests being inferred (or answered, not yet sent) at once; their answers
#: still go in order, and its next request messages wait (under flow control) meanwhile.
MAX_IN_FLIGHT = 8
#: REST statuses of the model server as gRPC codes (others: INTERNAL for 5xx, UNKNOWN).
HTTP_CODES = {
    400: Code.INVALID_ARGUMENT,
    404: Code.NOT_FOUND,
    413: Code.RESOURCE_EXHAUSTED,
    422: Code.INVALID_ARGUMENT,
    429: Code.RESOURCE_EXHAUSTED,
    501: Code.UNIMPLEMENTED,
    502: Code.UNAVAILABLE,
    503: Code.UNAVAILABLE,
    504: Code.DEADLINE_EXCEEDED,
}


class Target:
    """The InferenceService a call is for, and where its model server answers."""

    __slots__ = ("namespace", "name", "base", "prefix")

    def __init__(self, namespace: str, name: str, base: str) -> None:
        self.namespace, self.name, self.base = namespace, name, base
        self.prefix = f"/serving/{namespace}/{name}"


def target_of(call: Call, domain: str) -> tuple[str, str]:
    """(namespace, name) named by the call's metadata or its ``:authority``."""
    named = next((v for k, v in call.metadata if k == TARGET_METADATA), None)
    if named is not None:
        namespace, _, name = named.strip().partition("/")
    else:  # the same parsing as a REST request's Host (gateway.fastpath)
        target = routes.host_target(call.authority or "", domain)
        if target is None:
            raise GRPCError(
                Code.INVALID_ARGUMENT,
                f"no InferenceService named: the authority {call.authority!r} is not "
                f"{{name}}.{{namespace}}.{domain.strip('.')} (DNS labels), and no "
                f"{TARGET_METADATA}: {{namespace}}/{{name}} metadata was sent",
            )
        return target
    if not (routes.DNS_LABEL.match(namespace) and routes.DNS_LABEL.match(name)):
        raise GRPCError(
            Code.INVALID_ARGUMENT,
            f"{TARGET_METADATA}: {named!r} does not name an InferenceService "
            "as {namespace}/{name} (DNS labels)",
        )
    return namespace, name


class InferenceService:
    """The gRPC handler: ``await service(call)`` answers one call's serialized response."""

    def __init__(self, fast_path: ProxyFastPath, domain: str) -> None:
        self.fast_path = fast_path
        self.gw = fast_path.gw
        self.domain = domain
        self.limit = self.gw.settings.max_body_bytes
        self.methods: dict[str, tuple[Any, Callable[[Target, Any], Awaitable[Any]]]] = {
            "ServerLive": (pb.ServerLiveRequest, self.server_live),
            "ServerReady": (pb.ServerReadyRequest, self.server_ready),
            "ModelReady": (pb.ModelReadyRequest, self.model_ready),
            "ServerMetadata": (pb.ServerMetadataRequest, self.server_metadata),
            "ModelMetadata": (pb.ModelMetadataRequest, self.model_metadata),
            "ModelInfer": (pb.ModelInferRequest, self.model_infer),
        }

    async def __call__(self, call: Call) -> bytes:
        method = call.method.removeprefix(SERVICE) if call.method.startswith(SERVICE) else None
        if method not in self.methods:
            raise GRPCError(Code.UNIMPLEMENTED, f"unknown method {call.method}")
        request_type, handler = self.methods[method]
        try:
            request = request_type.FromString(call.message)
        except Exception:  # noqa: BLE001 - protobuf's DecodeError and the C module's own
            raise GRPCError(Code.INVALID_ARGUMENT, f"the {method} request does not parse") from None
        namespace, name = target_of(call, self.domain)
        await self.authorize(call, namespace, name)
        response = await self.answer(namespace, name, handler, request)
        return response.SerializeToString()  # type: ignore[no-any-return]

    async def answer(
        self,
        namespace: str,
        name: str,
        handler: Callable[[Target, Any], Awaitable[Any]],
        request: Any,
    ) -> Any:
        """``handler``'s answer from the InferenceService's model server (activated if it
        is scaled to zero), counted as its activity."""
        target = Target(namespace, name, await self.endpoint(namespace, name))
        key = (namespace, name)
        self.gw.activity.begin(key)
        try:
            return await handler(target, request)
        finally:
            self.gw.activity.end(key)

    async def stream_infer(
        self, call: Call, requests: AsyncIterator[bytes]
    ) -> AsyncGenerator[bytes, None]:
        """``ModelStreamInfer``: authorized once, then every request message answered, in
        order, while later ones are already being inferred."""
        namespace, name = target_of(call, self.domain)
        await self.authorize(call, namespace, name)
        pending: asyncio.Queue[asyncio.Future[bytes] | None] = asyncio.Queue()
        slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        reader = asyncio.create_task(self.read_stream(namespace, name, requests, pending, slots))
        try:
            while (next_answer := await pending.get()) is not None:
                answer = await next_answer
                slots.release()
                yield answer
        finally:
            reader.cancel()
            while not pending.empty():
                if (left := pending.get_nowait()) is not None:
                    left.cancel()

    async def read_stream(
        self,
        namespace: str,
        name: str,
        requests: AsyncIterator[bytes],
        pending: asyncio.Queue[asyncio.Future[bytes] | None],
        slots: asyncio.Semaphore,
    ) -> None:
        """Start inferring each request message as it comes, once one of the ``slots`` is
        free; a broken request stream (a message too large, one that does not inflate) is
        queued after the answers before it, as the call's failure."""
        try:
            async for message in requests:
                await slots.acquire()
                pending.put_nowait(
                    asyncio.ensure_future(self.stream_answer(namespace, name, message))
                )
        except Exception as exc:  # noqa: BLE001 - any failure ends the call, after its answers
            failed: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            if not isinstance(exc, GRPCError):
                log.exception("gRPC ModelStreamInfer's requests failed")
                exc = GRPCError(Code.INTERNAL, "internal error in the gateway")
            failed.set_exception(exc)
            pending.put_nowait(failed)
            return
        pending.put_nowait(None)

    async def stream_answer(self, namespace: str, name: str, message: bytes) -> bytes:
        """One ``ModelStreamInferResponse``: the inference, or why it failed."""
        try:
            request = pb.ModelInferRequest.FromString(message)
        except Exception:  # noqa: BLE001 - protobuf's DecodeError and the C module's own
            return stream_response(error="the ModelInferRequest does not parse")
        try:
            response = await self.answer(namespace, name, self.model_infer, request)
        except GRPCError as exc:
            return stream_response(error=exc.message)
        except Exception:
            log.exception("gRPC ModelStreamInfer for %s/%s failed", namespace, name)
            return stream_response(error="internal error in the gateway")
        return stream_response(response.SerializeToString())

    async def authorize(self, call: Call, namespace: str, name: str) -> None:
        """As for REST: authenticate the metadata, then the edit role in ``namespace``."""
        # Browsers cannot make gRPC calls: no cookie session (and so no CSRF) here.
        headers = [(k.encode(), v.encode()) for k, v in call.metadata if k != "cookie"]
        conn = HTTPConnection({"type": "http", "headers": headers, "client": call.peer})
        try:
            principal = await self.gw.auth.authenticate(conn)
        except AuthError as exc:
            raise GRPCError(Code.UNAUTHENTICATED, str(exc)) from None
        if principal is None:
            raise GRPCError(
                Code.UNAUTHENTICATED,
                "authentication required: send the metadata authorization: Bearer <token>",
            )
        path = f"/serving/{namespace}/{name}"
        try:
            self.gw.authz.authorize(principal, namespace, "edit", "POST", path)
        except GatewayError as exc:
            raise GRPCError(Code.PERMISSION_DENIED, exc.message) from None

    async def endpoint(self, namespace: str, name: str) -> str:
        """The model server's URL, as the REST proxy finds it (activating from zero)."""
        match = routes.resolve(f"/serving/{namespace}/{name}/")
        assert match is not None and match.route.dynamic_kind == "inferenceservice"
        try:
            return await self.fast_path.workload_endpoint(match)
        except DataPlaneError as exc:  # scaled to zero and not back in time, or failed
            raise GRPCError(Code.UNAVAILABLE, exc.message) from None
        except GatewayError:
            raise GRPCError(
                Code.NOT_FOUND,
                f"InferenceService {namespace}/{name} has no live endpoint: it does not exist "
                f"or is not ready (`shipyard get isvc {name} -n {namespace}`)",
            ) from None

    async def rest(
        self, target: Target, method: str, path: str, body: bytes | None = None, length: int = 0
    ) -> tuple[bytes, str | None]:
        """Call the model server's REST API; (body, Inference-Header-Content-Length) of a 200,
        else the gRPC error its answer maps to."""
        headers = [(b"accept", b"application/json")]
        if body is not None:
            headers += [
                (b"content-type", b"application/octet-stream"),
                (HEADER_LENGTH.encode(), str(length).encode()),
            ]
        try:
            resp = await self.gw.upstream.request(
                method, target.base, (target.prefix + path).encode(), headers, body
            )
        except UpstreamTimeout:
            raise GRPCError(Code.DEADLINE_EXCEEDED, "the model server did not answer") from None
        except UpstreamError as exc:
            log.warning("gRPC upstream %s failed: %s", target.base, exc)
            raise GRPCError(Code.UNAVAILABLE, "the model server is unreachable") from None
        try:
            answer = await self.read(resp)
        finally:
            resp.close()
        header_length = dict(resp.headers).get(HEADER_LENGTH.encode())
        if resp.status != 200:
            raise upstream_error(resp.status, answer)
        return answer, header_length.decode() if header_length else None

    async def read(self, resp: Any) -> bytes:
        whole = await resp.small_body(self.limit)
        if whole is not None:
            return whole  # type: ignore[no-any-return]
        chunks, size = [], 0
        while (chunk := await resp.read_chunk()) is not None:
            size += len(chunk)
            if size > self.limit:
                resp.abort()
                raise GRPCError(
                    Code.RESOURCE_EXHAUSTED, f"the answer is larger than {self.limit} bytes"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def rest_json(self, target: Target, path: str) -> dict[str, Any]:
        body, _ = await self.rest(target, "GET", path)
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise GRPCError(Code.INTERNAL, f"the model server's {path} is not a JSON object")
        return doc

    # ---- the methods ---------------------------------------------------------------------

    async def server_live(self, target: Target, request: Any) -> Any:
        doc = await self.rest_json(target, "/v2/health/live")
        return pb.ServerLiveResponse(live=bool(doc.get("live")))

    async def server_ready(self, target: Target, request: Any) -> Any:
        doc = await self.rest_json(target, "/v2/health/ready")
        return pb.ServerReadyResponse(ready=bool(doc.get("ready")))

    async def model_ready(self, target: Target, request: Any) -> Any:
        doc = await self.rest_json(target, model_path(request.name, request.version, "/ready"))
        return pb.ModelReadyResponse(ready=bool(doc.get("ready")))

    async def server_metadata(self, target: Target, request: Any) -> Any:
        doc = await self.rest_json(target, "/v2")
        return pb.ServerMetadataResponse(
            name=str(doc.get("name", "")),
            version=str(doc.get("version", "")),
            extensions=[str(e) for e in doc.get("extensions") or []],
        )

    async def model_metadata(self, target: Target, request: Any) -> Any:
        doc = await self.rest_json(target, model_path(request.name, request.version))
        response = pb.ModelMetadataResponse(
            name=str(doc.get("name", request.name)),
            versions=[str(v) for v in doc.get("versions") or []],
            platform=str(doc.get("platform", "")),
        )
        for field in ("inputs", "outputs"):
            for spec in doc.get(field) or []:
                if isinstance(spec, dict):
                    getattr(response, field).add(
                        name=str(spec.get("name", "")),
                        datatype=str(spec.get("datatype", "")),
                        shape=[int(d) for d in spec.get("shape") or []],
                    )
        return response

    async def model_infer(self, target: Target, request: Any) -> Any:
        body, length = rest_request(request)
        path = model_path(request.model_name, request.model_version, "/infer")
        answer, header_length = await self.rest(target, "POST", path, body, length)
        response = pb.ModelInferResponse()
        fill_response(response, answer, header_length, request.model_name)
        return response


def model_path(model: str, version: str, suffix: str = "") -> str:
    if not model:
        raise GRPCError(Code.INVALID_ARGUMENT, "the model name is required")
    path = f"/v2/models/{quote(model, safe='')}"
    if version:
        path += f"/versions/{quote(version, safe='')}"
    return path + suffix


def stream_response(infer_response: bytes = b"", error: str = "") -> bytes:
    """A serialized ``ModelStreamInferResponse`` (Triton's: ``string error_message = 1;
    ModelInferResponse infer_response = 2;``). Written here rather than generated: the two
    length-delimited fields are all it is, and our proto keeps KServe's unary service."""
    if error:
        return _delimited(1, error.encode())
    return _delimited(2, infer_response)


def _delimited(number: int, value: bytes) -> bytes:
    """A protobuf length-delimited field: key, varint length, bytes."""
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def upstream_error(status: int, body: bytes) -> GRPCError:
    """The model server's error answer as a gRPC error, with its message."""
    try:
        doc = json.loads(body)
        message = (
            str(doc.get("error") or doc.get("message") or doc) if isinstance(doc, dict) else ""
        )
    except ValueError:
        message = body[:500].decode(errors="replace")
    code = HTTP_CODES.get(status, Code.INTERNAL if status >= 500 else Code.UNKNOWN)
    return GRPCError(code, f"model server: {message or f'HTTP {status}'}")


async def start_listener(app: Any, settings: Any) -> asyncio.Server | None:
    """Serve gRPC inference for the gateway ``app`` on ``SHIPYARD_GATEWAY_GRPC_PORT``; None
    (logged) when the port cannot be had: HTTP goes on without it."""
    service = InferenceService(app.fast_path, settings.ingress_domain)
    port = settings.gateway_grpc_port
    try:
        streams: dict[str, StreamHandler] = {STREAM_INFER: service.stream_infer}
        server = await start_server(service, settings.host, port, settings.max_body_bytes, streams)
    except OSError as exc:
        log.error("no gRPC inference listener on %s:%s: %s", settings.host, port, exc)
        return None
    log.info(
        "gRPC inference (inference.GRPCInferenceService, h2c) on %s:%s for *.*.%s",
        settings.host,
        port,
        settings.ingress_domain,
    )
    return server
