"""Stand-in for a shipyard process, used by tests/test_up.py while the real ones are written.

It follows the process contract (SHIPYARD_PORT, key files, NATS_URL), serves /healthz and
/readyz, and starts a grandchild in its own process group, so the supervisor's group
cleanup is exercised for real. It exits with code 3 when the contract is not met.
"""

from __future__ import annotations

import os
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        ok = self.path in ("/healthz", "/readyz")
        self.send_response(200 if ok else 404)
        self.end_headers()
        self.wfile.write(b"ok" if ok else b"not found")

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> int:
    for name in ("SHIPYARD_GATEWAY_PUBLIC_KEY_FILE", "SHIPYARD_GATEWAY_PRIVATE_KEY_FILE"):
        if not Path(os.environ.get(name, "/nonexistent")).is_file():
            sys.stderr.write(f"stand-in: {name} does not name a file\n")
            return 3
    if not os.environ.get("NATS_URL", "").startswith("nats://"):
        sys.stderr.write("stand-in: NATS_URL missing\n")
        return 3
    # A grandchild that would outlive us if the supervisor only killed its direct child.
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    server = ThreadingHTTPServer(
        (os.environ.get("SHIPYARD_HOST", "127.0.0.1"), int(os.environ["SHIPYARD_PORT"])), _Health
    )
    sys.stderr.write(f"stand-in listening on {server.server_address}\n")
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
