"""What the hostile-tenant tests share: the escape probe, reading its reports, a host server,
and running code as the platform's own non-root uid."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

#: escape_probe.py's source: run inside a workload as ``python3 -c PROBE '<json targets>'``.
PROBE = (Path(__file__).parent / "escape_probe.py").read_text()
#: The container image's uid: the platform's own when it is not root.
UID = 10001
REPO = Path(__file__).resolve().parents[2]
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


def outer_sandbox(bwrap: str, read_only: list[str]) -> list[str]:
    """A root-built view with ``read_only`` paths at their own places, parents traversable."""
    argv = [bwrap, "--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
    for name in ("bin", "sbin", "lib", "lib64"):
        if os.path.islink(f"/{name}"):
            argv += ["--symlink", os.readlink(f"/{name}"), f"/{name}"]
    # The host's own /proc and /dev: a nested, unprivileged bubblewrap may only mount a new
    # proc where the one it can see is not partly covered (as bubblewrap's --proc would be).
    argv += ["--dev-bind", "/dev", "/dev", "--bind", "/proc", "/proc"]
    argv += ["--perms", "1777", "--tmpfs", "/tmp"]
    parents: set[str] = set()
    for path in read_only:
        parent = os.path.dirname(path)
        while parent not in ("/", "/usr", "/etc") and not parent.startswith(("/usr/", "/etc/")):
            parents.add(parent)
            parent = os.path.dirname(parent)
    for parent in sorted(parents, key=len):
        argv += ["--perms", "0755", "--dir", parent]
    for path in read_only:
        argv += ["--ro-bind", path, path]
    return argv


def run_as_platform_user(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -c code args`` as ``UID`` with no capabilities (``setpriv``), from the
    checkout, inside ``outer_sandbox``'s view of the interpreter and the checkout (read-only)
    with a fresh /tmp. It must exit 0, else the test fails with the end of its stderr."""
    bwrap, setpriv = shutil.which("bwrap"), shutil.which("setpriv")
    assert bwrap and setpriv, "make install provides bubblewrap; util-linux provides setpriv"
    outer = outer_sandbox(bwrap, sorted({os.path.realpath(sys.base_prefix), str(REPO)}))
    drop = [setpriv, f"--reuid={UID}", f"--regid={UID}", "--clear-groups", "--inh-caps=-all"]
    done = subprocess.run(
        [*outer, "--", *drop, "--bounding-set=-all", "--", sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=REPO,
        env={"PATH": os.environ["PATH"], "HOME": "/tmp"},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done
