"""Workload tokens: short-lived, in the in-cluster layout, readable only by the workload,
refreshed in place, and dead once the workload's run has ended."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.workload_runs import LIVE_TTL
from services.common.identity import ensure_gateway_keys
from services.common.runtime import LocalRuntime, Phase
from services.common.runtime.config import WORKLOAD_TOKEN_TTL_SECONDS
from services.common.serviceaccounts import ServiceAccountTokens
from tests import specs
from tests.conftest import ADMIN_USER, create_profile

pytestmark = pytest.mark.timeout(120)
TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


async def test_token_file_is_private_short_lived_and_refreshed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    private, _ = ensure_gateway_keys(state)
    tokens = ServiceAccountTokens((state / "keys" / "serviceaccounts.key").read_bytes(), 600)
    issued: list[str] = []

    def issue(namespace: str, binding: str) -> str:
        issued.append(binding)
        return tokens.issue(namespace, binding=binding, service="test")

    runtime = LocalRuntime(state, workload_tokens=issue)
    script = (
        f"stat -c '%a %u' {TOKEN}; cat {TOKEN}; echo; cat $SHIPYARD_TOKEN_FILE > /dev/null; "
        "echo refresh-me > /tmp/ready; while [ ! -e /tmp/go ]; do sleep 0.05; done; "
        f"cat {TOKEN}; echo"
    )
    try:
        await runtime.apply({"namespace": "team-a", "name": "tok", "command": ["sh", "-c", script]})
        wdir = runtime.root / "workloads" / "team-a" / "tok"
        deadline = time.monotonic() + 30
        while not (wdir / "tmp" / "ready").exists():  # noqa: ASYNC110 - a file written inside
            assert time.monotonic() < deadline, "the workload never started"
            time.sleep(0.05)  # noqa: ASYNC251
        binding = issued[0]
        assert binding.startswith("team-a/tok/")
        assert await runtime.run_is_live(binding)
        assert not await runtime.run_is_live("team-a/tok/another-run")
        # Half its life has passed: the runtime rewrites the file in place.
        token_file = wdir / "secrets" / "token"
        old = time.time() - WORKLOAD_TOKEN_TTL_SECONDS
        os.utime(token_file, (old, old))
        assert await runtime.refresh_tokens() == 1
        (wdir / "tmp" / "go").write_text("")
        status = await runtime.wait("team-a", "tok", timeout=30)
        lines = [line async for line in runtime.logs("team-a", "tok")]
        assert status.phase == Phase.SUCCEEDED, lines
        mode, owner = lines[0].split()
        assert mode == "400" and int(owner) != 0  # only the workload's uid may read it
        first, second = lines[1], lines[2]
        assert first != second and len(issued) == 2 and issued[1] == binding
        sub, ns, bound = tokens.verify_bound(second)
        assert (sub, ns, bound) == (
            "system:serviceaccount:team-a:default-editor",
            "team-a",
            ("test", binding),
        )
        # Ended: not live any more, and the token file is gone.
        assert not await runtime.run_is_live(binding)
        await runtime.refresh_tokens()
        assert not token_file.exists()
        assert private.stat().st_mode & 0o077 == 0
    finally:
        await runtime.shutdown()


def test_gateway_refuses_a_token_once_its_run_ended(trusted_header_platform: Any) -> None:
    """A step leaks its token (prints it) and keeps running; the token works against the
    gateway while the step runs and is refused (401) the moment the step has ended."""
    platform = trusted_header_platform
    admin = httpx.Client(
        base_url=platform.gateway_url, headers={"kubeflow-userid": ADMIN_USER}, timeout=10
    )
    create_profile(admin, "team-a")
    claim = specs.claim("gate", "1Mi")
    claims = "/api/v1/namespaces/team-a/persistentvolumeclaims"
    assert admin.post(claims, json=claim).status_code == 201
    # The step prints its token, then waits until the claim "gate" is gone.
    check = (
        "import os, urllib.request as u\n"
        "r = u.Request(os.environ['SHIPYARD_URL']"
        " + '/api/v1/namespaces/team-a/persistentvolumeclaims/gate')\n"
        "token = open(os.environ['SHIPYARD_TOKEN_FILE']).read()\n"
        "r.add_header('Authorization', 'Bearer ' + token)\n"
        "u.urlopen(r)\n"
    )
    step = (
        'echo "token=$(cat $SHIPYARD_TOKEN_FILE)"; '
        'while python3 -c "$CHECK" 2>/dev/null; do sleep 0.2; done'
    )
    workflow = specs.workflow(
        "leak",
        [
            {
                "name": "main",
                "container": {
                    "image": "alpine",
                    "command": ["sh", "-c", step],
                    "env": [{"name": "CHECK", "value": check}],
                },
            }
        ],
    )
    base = "/apis/argoproj.io/v1alpha1/namespaces/team-a/workflows"
    assert admin.post(base, json=workflow).status_code == 201
    runtime = LocalRuntime(platform.state_dir)
    token = None
    deadline = time.monotonic() + 60
    while token is None and time.monotonic() < deadline:
        for wdir in (runtime.root / "workloads" / "team-a").glob("wf-*"):
            log = wdir / "output.log"
            lines = log.read_text().splitlines() if log.exists() else []
            token = next((x[len("token=") :] for x in lines if x.startswith("token=")), token)
        time.sleep(0.2)
    assert token, "the step never printed its token"
    leaked = httpx.Client(
        base_url=platform.gateway_url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    while_running = leaked.get(base)
    assert while_running.status_code == 200, while_running.text
    assert [w["metadata"]["name"] for w in while_running.json()["items"]] == ["leak"]
    assert admin.delete(f"{claims}/gate").status_code == 200  # the step may finish now
    deadline = time.monotonic() + 60
    while admin.get(f"{base}/leak").json().get("status", {}).get("phase") != "Succeeded":
        assert time.monotonic() < deadline, admin.get(f"{base}/leak").json().get("status")
        time.sleep(0.2)
    # Refused within the gateway's short cache of a live answer (LIVE_TTL), not at expiry.
    ended = time.monotonic()
    after = leaked.get(base)
    while after.status_code == 200 and time.monotonic() - ended < LIVE_TTL + 3:
        time.sleep(0.1)
        after = leaked.get(base)
    assert after.status_code == 401, after.text
    assert "no longer running" in after.json()["message"]
