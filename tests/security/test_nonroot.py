"""The local runtime when the platform is not root (the container image's uid 10001).

The test process is root, so it runs the platform's side as uid 10001 itself: a runner script
that builds a LocalRuntime and starts a workload that tries to escape. The only help it gets
is a view of the interpreter and the checkout, wherever they are (this machine's Python lives
under /root, 0700, and a CI checkout may sit in a private directory): an outer bubblewrap
(as root) shows /usr, /etc, the interpreter and the checkout read-only, with traversable
parents, and a fresh /tmp; then ``setpriv`` becomes 10001 with no capabilities. Everything
after that (the unprivileged bubblewrap with its own user namespace, the network agent
joining that namespace, the forwarded API) is the code under test, unprivileged.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.security.conftest import PROBE, escape_reports, escapes

pytestmark = pytest.mark.timeout(120)
UID = 10001
RUNNER = textwrap.dedent(
    """
    import asyncio, json, sys
    from services.common.identity import ensure_gateway_keys
    from services.common.runtime import LocalRuntime
    from services.common.serviceaccounts import ServiceAccountTokens

    async def main(state, api_port, targets, probe):
        keys = __import__("pathlib").Path(state) / "keys"
        ensure_gateway_keys(keys.parent)
        tokens = ServiceAccountTokens((keys / "serviceaccounts.key").read_bytes(), 600)
        rt = LocalRuntime(
            state,
            workload_env=lambda ns: {"SHIPYARD_URL": f"http://127.0.0.1:{api_port}"},
            workload_tokens=lambda ns, b: tokens.issue(ns, binding=b, service="test"),
        )
        await rt.create_volume("team-a", "data")
        spec = {"namespace": "team-a", "name": "probe",
                "command": ["python3", "-c", probe, json.dumps(targets)],
                "volumeMounts": [{"name": "d", "mountPath": "/data"}],
                "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}
        await rt.apply(spec)
        status = await rt.wait("team-a", "probe", timeout=60)
        lines = [line async for line in rt.logs("team-a", "probe")]
        data = await rt.resolve_volume("team-a", "data")
        owner = data.stat().st_uid
        await rt.refresh_tokens()  # the run ended: its token is removed
        token = rt.root / "workloads" / "team-a" / "probe" / "secrets" / "token"
        print(json.dumps({"status": status.model_dump(mode="json"), "lines": lines,
                          "volume_owner": owner, "token_left": token.exists()}))
        await rt.shutdown()

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]))
    """
)


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


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become uid 10001")
def test_unprivileged_platform_sandboxes_workloads(host_service: int) -> None:
    api_port = host_service
    bwrap, setpriv = shutil.which("bwrap"), shutil.which("setpriv")
    assert bwrap and setpriv, "make install provides bubblewrap; util-linux provides setpriv"
    repo = str(Path(__file__).resolve().parents[2])
    state_dir = Path("/tmp/nonroot-platform/state")  # in the outer sandbox's own /tmp
    targets = {
        "secret_files": [
            str(state_dir / "keys" / "gateway.key"),
            "/etc/shadow",
            "/var/run/secrets/kubernetes.io/serviceaccount/token",
        ],
        "listable_dirs": [str(state_dir)],
        "write_paths": ["/usr/x", str(state_dir / "x")],
        "tcp": [["127.0.0.1", api_port], ["127.0.0.1", 5432], ["127.0.0.2", 18080]],
    }
    outer = outer_sandbox(bwrap, sorted({os.path.realpath(sys.base_prefix), repo}))
    argv = [
        *outer,
        "--",
        setpriv,
        f"--reuid={UID}",
        f"--regid={UID}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--",
        sys.executable,
        "-c",
        RUNNER,
        str(state_dir),
        str(api_port),
        json.dumps(targets),
        PROBE,
    ]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=100,
        cwd=repo,
        env={"PATH": os.environ["PATH"], "HOME": "/tmp"},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    status = result["status"]
    assert status["phase"] == "Succeeded", (status["reason"], status["message"], result["lines"])
    report = escape_reports(result["lines"])[0]
    escaped = escapes(report)
    # The forwarded API address is the one way out, and the workload reads its own token.
    own_token = "read /var/run/secrets/kubernetes.io/serviceaccount/token"
    assert set(escaped) == {"connect 127.0.0.2:18080", own_token}, escaped
    assert escaped[own_token].startswith("ESCAPED: b'eyJ")  # a JWT
    assert int(report["CapEff"], 16) == 0 and int(report["CapBnd"], 16) == 0
    assert report["NoNewPrivs"] == "1" and report["Seccomp"] == "2"
    # The sandbox ran as the platform's own uid (documented in docs/security.md).
    assert result["volume_owner"] == UID
    assert result["token_left"] is False
    with socket.socket() as s:  # the test's API server is still there: the probe's refusal
        s.connect(("127.0.0.1", api_port))  # of it came from the sandbox, not a dead server
