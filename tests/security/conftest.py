"""What the hostile-tenant tests share: the escape probe, reading its reports, a host server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

#: escape_probe.py's source: run inside a workload as ``python3 -c PROBE '<json targets>'``.
PROBE = (Path(__file__).parent / "escape_probe.py").read_text()
#: The kinds of attempt the probe reports, by the first word of their key.
ATTEMPTS = ("read", "list", "write", "connect", "mount", "remount", "unshare", "chroot", "setuid")


def escape_reports(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The probe's reports among a workload's log lines."""
    return [
        json.loads(line)["escape-report"] for line in lines if line.startswith('{"escape-report"')
    ]


def escapes(report: dict[str, Any], kinds: tuple[str, ...] = ATTEMPTS) -> dict[str, Any]:
    """The attempts of ``kinds`` that were not blocked (asserts some were made at all)."""
    attempts = {k: v for k, v in report.items() if k.split()[0] in kinds}
    assert attempts, report
    return {k: v for k, v in attempts.items() if not str(v).startswith("blocked")}


class _Platform(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = b"the platform api"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def host_service() -> Iterator[int]:
    """A TCP server on the host's loopback, standing for the gateway and the services; its
    port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Platform)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1])
    server.shutdown()
