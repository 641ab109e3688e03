"""Running schemathesis against one service's API through the gateway (tests and bench)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from services.common.settings import SINGLE_USER_NAMESPACE

SERVICES = ("notebook", "automl", "pipeline", "serving")


def fuzz(
    gateway: str,
    service: str,
    examples: int,
    workdir: Path,
    seed: int = 1,
    phases: str = "examples,fuzzing",
    timeout: float = 600,
) -> str:
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
        phases,
        "--rate-limit",
        "1800/m",  # under the gateway's per-user limit, so requests reach the services
        "--request-timeout",
        "20",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=workdir)
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"schemathesis found failures in {service}:\n{out[-6000:]}"
    return out
