"""Every service's API fuzzed through the gateway: no 5xx, whatever the request.

schemathesis loads each service's OpenAPI document from the public URL
(``{gateway}/openapi/{service}.json``, readable by any signed-in user) and sends generated
requests (valid and invalid: wrong types, missing fields, odd strings) through the gateway
of a real platform (single-user mode, so every request is the signed-in person). The check
is ``not_a_server_error``: a 2xx, or a 4xx with a message, never a 500 or a stack trace.
A small budget here; ``bench/bench_fuzz.py`` runs a large one (``tests/fuzzing.py``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fuzzing import SERVICES, fuzz


def test_openapi_documents_are_public_to_signed_in_users(platform: Any) -> None:
    for service in SERVICES:
        r = httpx.get(f"{platform.gateway_url}/openapi/{service}.json", timeout=10)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["openapi"].startswith("3.") and doc["paths"], service
        # The resource routes say what they take: the namespace and the object.
        for path, operations in doc["paths"].items():
            if "{namespace}" in path:
                for op in operations.values():
                    names = {p["name"] for p in op.get("parameters", [])}
                    assert "namespace" in names, (service, path)


@pytest.mark.parametrize("service", SERVICES)
def test_fuzzed_requests_never_get_a_server_error(
    platform: Any, service: str, tmp_path: Path
) -> None:
    out = fuzz(platform.gateway_url, service, examples=3, workdir=tmp_path)
    match = re.search(r"^\s*(\d+) generated", out, re.MULTILINE)
    assert match, out[-3000:]
    generated = int(match.group(1))
    assert generated > 20, out[-3000:]  # it really sent requests
    assert "Server error" not in out, out[-3000:]


def test_a_server_error_is_found_when_there_is_one(tmp_path: Path) -> None:
    """The check can fail: an app that answers 500 to one operation is reported."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    doc = {
        "openapi": "3.0.3",
        "info": {"title": "broken", "version": "1"},
        "paths": {
            "/boom": {"get": {"responses": {"200": {"description": "ok"}}}},
        },
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = json.dumps(doc).encode() if self.path.startswith("/openapi") else b"{}"
            self.send_response(200 if self.path.startswith("/openapi") else 500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(AssertionError, match="schemathesis found failures in broken"):
            fuzz(url, "broken", examples=2, workdir=tmp_path)
    finally:
        server.shutdown()
        server.server_close()
