"""Push metrics: per-trial tokens, and the door workloads use to report.

A trial's workload gets ``SHIPYARD_METRICS_URL`` and ``SHIPYARD_METRICS_TOKEN``; the token is
an HMAC of (namespace, trial) under a key only this service holds (a file in its state
directory, created on first use), so it is good for that one trial and nothing else.
Workloads reach the service directly on loopback, without a gateway assertion:
:class:`TrialTokenMiddleware` sits in front of the assertion check and hands requests to the
push endpoint that carry a valid trial token to ``push_app``; everything else goes on to
the normal, assertion-checked app (so a person can push through the gateway too).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

TOKEN_HEADER = "x-shipyard-trial-token"
PUSH_PATH = re.compile(r"^/apis/kubeflow\.org/v1beta1/namespaces/([^/]+)/trials/([^/]+)/metrics$")


def load_key(state_dir: Path) -> bytes:
    path = Path(state_dir) / "keys" / "automl-push.key"
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(32)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(key.hex())
        tmp.chmod(0o600)
        try:
            os.link(tmp, path)  # first writer wins; a racing replica reads the winner's key
        except FileExistsError:
            pass
        tmp.unlink(missing_ok=True)
        return bytes.fromhex(path.read_text().strip())


def trial_token(key: bytes, namespace: str, trial: str) -> str:
    return hmac.new(key, f"{namespace}/{trial}".encode(), hashlib.sha256).hexdigest()


def token_valid(key: bytes, namespace: str, trial: str, token: str) -> bool:
    return hmac.compare_digest(trial_token(key, namespace, trial), token)


class TrialTokenMiddleware:
    """Route push requests with a valid trial token around the assertion middleware."""

    def __init__(self, app: ASGIApp, push_app: ASGIApp, key: bytes) -> None:
        self.app, self.push_app, self.key = app, push_app, key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST":
            match = PUSH_PATH.match(scope.get("path", ""))
            if match:
                token = ""
                for name, value in scope.get("headers", []):
                    if name == TOKEN_HEADER.encode():
                        token = value.decode("latin-1")
                if token and token_valid(self.key, match.group(1), match.group(2), token):
                    await self.push_app(scope, receive, send)
                    return
        await self.app(scope, receive, send)
