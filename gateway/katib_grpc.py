"""Katib's DB manager API (``api.v1.beta1.DBManager``) through the gateway, over gRPC.

Katib's SDK reads a trial's metrics with ``KatibClient().get_trial_metrics(name, namespace,
db_manager_address="HOST:6789")``: a plain (insecure) gRPC channel to Katib's DB manager.
The gateway listens for it on ``SHIPYARD_KATIB_DB_MANAGER_PORT`` (default 6789, Katib's
port; 0 turns it off), authenticates each call as it does an HTTP request, and hands the
request message's bytes to the automl service (``POST /internal/v1/katib/dbmanager/{method}``,
services/automl/dbmanager.py) with an identity assertion naming every namespace the caller
may use; the automl service checks the trial's own namespace and answers with the reply's
bytes or the gRPC status to return. gRPC stays in this process: the automl service, which
forks its workloads' supervisors, runs none of gRPC's threads.

Credentials travel as gRPC metadata: ``authorization: Bearer <token>`` (an OIDC token or a
service-account token), or ``kubeflow-userid``/``kubeflow-groups`` from a trusted proxy in
trusted-header mode. In single-user mode every call is the single user. Katib's SDK sends no
metadata, so outside single-user mode its ``get_trial_metrics`` is refused
(UNAUTHENTICATED); a gRPC client that adds the bearer token gets the same answer. A trial's
collector may present its trial token (``x-shipyard-trial-token``) instead: it is passed on
(with an assertion that grants nothing), and the automl service accepts it for that trial
alone.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import grpc
import httpx
from starlette.requests import HTTPConnection

from gateway.auth import AuthError
from services.common.identity import ASSERTION_HEADER, Identity

if TYPE_CHECKING:
    from gateway.gateway import Gateway

log = logging.getLogger(__name__)

SERVICE = "api.v1.beta1.DBManager"
METHODS = ("ReportObservationLog", "GetObservationLog", "DeleteObservationLog")
#: Caller metadata passed on to the automl service (never an identity of the caller's own).
FORWARDED = ("x-shipyard-trial-token", "x-shipyard-namespace")
CREDENTIALS = ("authorization", "kubeflow-userid", "kubeflow-groups")
CALL_TIMEOUT = 30.0


def listen_port() -> int:
    return int(os.environ.get("SHIPYARD_KATIB_DB_MANAGER_PORT", "6789"))


#: A trial-token call's assertion: no namespace, no grants (the token is the authority).
TOKEN_CALLER = Identity(user="system:katib-trial-token", role="view")


def _connection(metadata: dict[str, str], peer: str) -> HTTPConnection:
    """The call as the HTTP connection the gateway's Authenticator reads (headers, client)."""
    host = peer
    if peer.startswith(("ipv4:", "ipv6:")):
        host = peer.split(":", 1)[1].rsplit(":", 1)[0].strip("[]")
        host = host.replace("%5B", "").replace("%5D", "")
    headers = [(k.encode(), v.encode("latin-1")) for k, v in metadata.items() if k in CREDENTIALS]
    scope: dict[str, Any] = {"type": "http", "headers": headers, "client": (host, 0)}
    return HTTPConnection(scope)


class _Refused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class KatibDBManagerProxy:
    """The listener: authenticate, assert, forward the request's bytes, return the reply's."""

    def __init__(self, gw: Gateway, host: str, port: int, automl_url: str) -> None:
        self.gw, self.host, self.port = gw, host, port
        self.upstream = f"{automl_url.rstrip('/')}/internal/v1/katib/dbmanager/"
        self.server: grpc.aio.Server | None = None

    async def _metadata(self, metadata: dict[str, str], peer: str) -> tuple[tuple[str, str], ...]:
        passed = tuple((k, v) for k, v in metadata.items() if k in FORWARDED)
        if "x-shipyard-trial-token" in metadata:  # the automl service checks it
            return (*passed, (ASSERTION_HEADER, self.gw.assertion_for(TOKEN_CALLER)))
        try:
            principal = await self.gw.auth.authenticate(_connection(metadata, peer))
        except AuthError as exc:
            raise _Refused(grpc.StatusCode.UNAUTHENTICATED, str(exc)) from None
        if principal is None:
            raise _Refused(
                grpc.StatusCode.UNAUTHENTICATED,
                "authentication required: send 'authorization: Bearer <token>' metadata",
            )
        if self.gw.limiter.check(principal.user) > 0:
            raise _Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f'rate limit exceeded for "{principal.user}"'
            )
        default = self.gw.authz.default_namespace(principal)
        identity = self.gw.authz.authorize_by_object(principal, default)
        return (*passed, (ASSERTION_HEADER, self.gw.assertion_for(identity)))

    async def _forward(self, method: str, request: bytes, headers: dict[str, str]) -> bytes:
        try:
            r = await self.gw.http.post(
                self.upstream + method,
                content=request,
                headers={**headers, "content-type": "application/x-protobuf"},
                timeout=CALL_TIMEOUT,
            )
        except httpx.HTTPError as exc:
            log.warning("Katib DB manager call %s to %s: %s", method, self.upstream, exc)
            raise _Refused(
                grpc.StatusCode.UNAVAILABLE, "the automl service is unreachable"
            ) from None
        if r.status_code == 200:
            return r.content
        try:
            error = r.json()
            code = grpc.StatusCode[error["grpcCode"]]
            message = str(error["message"])
        except (ValueError, KeyError, TypeError):
            code, message = grpc.StatusCode.INTERNAL, f"automl service: HTTP {r.status_code}"
        raise _Refused(code, message)

    def _handler(self, method: str) -> grpc.RpcMethodHandler:
        async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            metadata = {
                k.lower(): v for k, v in context.invocation_metadata() or () if isinstance(v, str)
            }
            try:
                outgoing = await self._metadata(metadata, context.peer())
                return await self._forward(method, request, dict(outgoing))
            except _Refused as exc:
                await context.abort(exc.code, exc.message)
                raise  # unreachable: abort raises

        return grpc.unary_unary_rpc_method_handler(call)

    async def start(self) -> None:
        # No SO_REUSEPORT: a second gateway on a taken port must fail, not share its calls.
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {m: self._handler(m) for m in METHODS}),)
        )
        address = f"{self.host}:{self.port}"
        try:
            server.add_insecure_port(address)
        except RuntimeError as exc:  # taken: the gateway serves everything else
            log.error("Katib DB manager API not served on %s: %s", address, exc)
            return
        await server.start()
        self.server = server
        log.info("Katib DB manager API (gRPC) on %s, answered by %s", address, self.upstream)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=2)
            self.server = None


async def start_listener(app: Any, host: str, automl_url: str) -> KatibDBManagerProxy | None:
    """Start the listener for the gateway ``app`` (after its start-up), unless turned off."""
    port = listen_port()
    if not port:
        return None
    proxy = KatibDBManagerProxy(app.state.gw, host, port, automl_url)
    await proxy.start()
    return proxy
