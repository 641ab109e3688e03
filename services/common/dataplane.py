"""Credentials of the data plane that only the gateway and the owning service know.

Every Jupyter server gets its own token. Tenants never see it: the notebook service starts the
server with it, and the gateway adds it to each request it forwards to ``/notebook/{ns}/{name}``
(``Authorization: token ...``). Both derive it from one platform secret, the data-plane key
(``keys/dataplane.key``, mode 0600, or ``SHIPYARD_DATAPLANE_KEY``), so neither has to tell the
other, and a server's token says nothing about any other server's.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path


def load_or_create_key(path: Path) -> bytes:
    """The data-plane key at ``path``; a new random one (mode 0600) if the file is missing."""
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_hex(32).encode())
    try:
        os.link(tmp, path)  # first writer wins; a racing process reads the winner's key
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes().strip()


def notebook_token(key: bytes, namespace: str, name: str) -> str:
    """The Jupyter token of notebook ``namespace/name`` (64 hex characters)."""
    return hmac.new(key, f"notebook:{namespace}/{name}".encode(), hashlib.sha256).hexdigest()
