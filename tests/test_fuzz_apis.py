"""Every service's API fuzzed through the gateway: no 5xx, whatever the request.

schemathesis loads each service's OpenAPI document from the public URL
(``{gateway}/openapi/{service}.json``, readable by any signed-in user) and sends generated
requests (valid and invalid: wrong types, missing fields, odd strings) through the gateway
of a real platform (single-user mode, so every request is the signed-in person). The check
is ``not_a_server_error``: a 2xx, or a 4xx with a message, never a 500 or a stack trace.
A small budget here; ``bench/bench_fuzz.py`` runs a large one.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.settings import SINGLE_USER_NAMESPACE

SERVICES = ("notebook", "automl", "pipeline", "serving")


def fuzz(gateway: str, service: str, examples: int, workdir: Path, seed: int = 1) -> str:
    """Run schemathesis against one service through the gateway; its output (raises on a
    failure, with the failing requests and how to reproduce them)."""
    config = workdir / "schemathesis.toml"
    # Path parameters named namespace are the person's own namespace: another one is a 403
    # before the service sees the request, which would leave the service untested.
    config.write_text(f'[parameters]\n"path.namespace" = "{SINGLE_USER_NAMESPACE}"\n')
    argv = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(config),
        "run",
        f"{gateway}/openapi/{service}.json",
        "--url",
        gateway,
        "--checks",
        "not_a_server_error",
        "-n",
        str(examples),
        "--seed",
        str(seed),
        "--phases",
        "examples,fuzzing",
        "--rate-limit",
        "1800/m",  # under the gateway's per-user limit, so requests reach the services
        "--request-timeout",
        "20",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=workdir)
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"schemathesis found failures in {service}:\n{out[-6000:]}"
    return out


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
