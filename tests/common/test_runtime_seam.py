"""The runtime seam does not leak the host (issue 12): outside ``services/common/runtime`` no
code touches a workload's host path or loopback address, picks its interpreter, or probes the
runtime for optional methods.

A workload's data goes through its ``files``, ``Runtime.read_file`` and the object store; its
endpoint is an opaque URL; its interpreter is ``Runtime.python``. These checks read the source,
so a regression fails here before it fails on a Kubernetes cluster that this machine lacks.
"""

from __future__ import annotations

import inspect
import re
import typing
from pathlib import Path

import pytest

from services.common.runtime import Runtime

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("services", "gateway", "shipyard")
RUNTIME_PACKAGE = ROOT / "services" / "common" / "runtime"

#: Files allowed a loopback literal, and why: none of them is a workload's address.
LOOPBACK_ALLOWED = {
    "services/common/settings.py": "the platform's own services listen there by default",
    "services/automl/settings.py": "the automl service's own advertised address",
    "gateway/settings.py": "the gateway's default upstreams: the platform's services",
    "gateway/notebook_origin.py": "the browser-facing origin of a local quickstart",
    "shipyard/up.py": "`shipyard up` runs the platform's own processes on this machine",
    "shipyard/seaweedfs.py": "the embedded object store of `shipyard up`",
    "shipyard/ports.py": "free ports for `shipyard up`'s own processes on this machine",
    "shipyard/config.py": "the CLI's default gateway URL",
    "shipyard/auth.py": "the CLI's default gateway URL and its loopback login redirect",
}
#: Files allowed ``sys.executable``: the platform starting its own processes, not workloads.
EXECUTABLE_ALLOWED = {
    "services/common/natsbin.py": "finds the bundled nats-server beside the platform's Python",
    "shipyard/up.py": "`shipyard up` starts the platform's own services",
    "shipyard/kubeconfig.py": "kubectl's exec credential plugin is this CLI's own interpreter",
}
#: Files allowed the sandbox module: the gateway serves the address workloads reach it at.
SANDBOX_ALLOWED = {
    "gateway/settings.py": "the gateway's TLS certificate names the sandbox's API address",
}

RULES: list[tuple[str, re.Pattern[str], dict[str, str]]] = [
    ("a volume's host path", re.compile(r"\bresolve_volume\b|\bruntime\.volumes\b"), {}),
    (
        "an optional runtime method found by getattr",
        re.compile(r"getattr\(\s*(self\.)?runtime\b"),
        {},
    ),
    ("the service's own interpreter", re.compile(r"\bsys\.executable\b"), EXECUTABLE_ALLOWED),
    ("a loopback address", re.compile(r"127\.0\.0\.1|\blocalhost\b"), LOOPBACK_ALLOWED),
    (
        "the local sandbox's internals",
        re.compile(r"\bruntime\.sandbox\b|\bAPI_ADDRESS\b"),
        SANDBOX_ALLOWED,
    ),
]


def _sources() -> list[Path]:
    files = []
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            if RUNTIME_PACKAGE in path.parents or "eventspb" in path.parts:
                continue
            files.append(path)
    return files


@pytest.mark.parametrize("what,pattern,allowed", RULES, ids=[r[0] for r in RULES])
def test_no_caller_reaches_past_the_runtime(
    what: str, pattern: re.Pattern[str], allowed: dict[str, str]
) -> None:
    offenders = []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        if rel in allowed:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert not offenders, f"{what} outside services/common/runtime:\n" + "\n".join(offenders)


def test_the_rule_catches_what_it_names() -> None:
    """Each pattern matches the line it exists to stop (the scan cannot pass vacuously)."""
    samples = {
        "a volume's host path": "root = await self.runtime.resolve_volume(ns, claim)",
        "an optional runtime method found by getattr": 'adopt = getattr(self.runtime, "adopt")',
        "the service's own interpreter": "command = [sys.executable, '-m', 'server']",
        "a loopback address": '"--ServerApp.ip=127.0.0.1",',
        "the local sandbox's internals": "from services.common.runtime.sandbox import API_ADDRESS",
    }
    for what, pattern, _ in RULES:
        assert pattern.search(samples[what]), what


def test_the_interface_returns_no_host_path() -> None:
    """No public method of Runtime hands out a ``Path``."""
    for name, member in inspect.getmembers(Runtime, inspect.isfunction):
        if name.startswith("_"):
            continue
        returned = typing.get_type_hints(member).get("return")
        assert returned is not Path and "Path" not in str(returned), name
