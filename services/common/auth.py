"""Service-side authentication: every request must carry a gateway-signed identity assertion.

Verification happens in an ASGI middleware, before routing, so a request without a
valid assertion (missing, expired, wrong key, tampered) reaches no handler at all.
Handlers receive the verified caller through ``IdentityDep``.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import Depends, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from services.common.errors import ApiError
from services.common.identity import (
    ASSERTION_HEADER,
    AssertionError_,
    AssertionVerifier,
    Identity,
)

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class AssertionMiddleware:
    """Reject (401) any request whose identity assertion does not verify."""

    def __init__(
        self, app: ASGIApp, verifier: AssertionVerifier, public_paths: frozenset[str] = PUBLIC_PATHS
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.public_paths = public_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in self.public_paths:
            await self.app(scope, receive, send)
            return
        token = ""
        for key, value in scope.get("headers", []):
            if key == ASSERTION_HEADER.encode():
                token = value.decode("latin-1")
                break
        try:
            if not token:
                raise AssertionError_(
                    "missing identity assertion; call the API through the shipyard gateway"
                )
            identity = self.verifier.verify(token)
        except AssertionError_ as exc:
            await _reject(scope, send, str(exc))
            return
        scope.setdefault("state", {})["identity"] = identity
        await self.app(scope, receive, send)


async def _reject(scope: Scope, send: Send, message: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 4401})
        return
    body = json.dumps(ApiError(401, message).status()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def current_identity(request: Request) -> Identity:
    identity = getattr(request.state, "identity", None)
    if identity is None:  # only reachable if the middleware is not installed
        raise ApiError(401, "missing identity assertion")
    return identity


IdentityDep = Annotated[Identity, Depends(current_identity)]

READ_VERBS = {"get", "list", "watch"}


def authorize(
    identity: Identity, verb: str, namespace: str | None, resource: str, read_role: str = "view"
) -> None:
    """Defence in depth behind the gateway: the assertion must cover this namespace and verb.

    Reads need ``read_role`` (``view``, or ``edit`` for Secrets, as Kubernetes' ``view`` role
    leaves them out); writes need ``edit``."""
    needed = read_role if verb in READ_VERBS else "edit"
    if not identity.allows(needed, namespace):
        where = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
        raise ApiError(
            403,
            f'User "{identity.user}" cannot {verb} resource "{resource}" {where}',
            details={"kind": resource},
        )
