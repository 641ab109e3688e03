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
import socket
import textwrap
from pathlib import Path

import pytest

from tests.security.conftest import PROBE, UID, escape_reports, escapes, run_as_platform_user

pytestmark = pytest.mark.timeout(120)
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


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become uid 10001")
def test_unprivileged_platform_sandboxes_workloads(host_service: int) -> None:
    api_port = host_service
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
    done = run_as_platform_user(RUNNER, str(state_dir), str(api_port), json.dumps(targets), PROBE)
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
