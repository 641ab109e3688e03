"""Escapes tried from a pipeline step, a Katib trial and a notebook of the real platform.

The platform runs as real processes (the session's ``platform`` fixture: four services and
the gateway, single-user mode). Each workload runs tests/security/escape_probe.py inside its
sandbox, created the way a tenant would create it: an Argo Workflow, a Katib Experiment and
a Kubeflow Notebook with a custom command. The test reads the probes' reports from the
runtime's logs on the host, as an observer.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.runtime import LocalRuntime
from services.common.settings import SINGLE_USER_NAMESPACE as NS
from tests import specs
from tests.security.conftest import PROBE, escape_reports, escapes

pytestmark = pytest.mark.timeout(180)
RUN_PROBE = 'python3 -c "$PROBE" "$TARGETS"'


def probe_env(targets: dict[str, Any]) -> list[dict[str, str]]:
    return [{"name": "PROBE", "value": PROBE}, {"name": "TARGETS", "value": json.dumps(targets)}]


def workflow(targets: dict[str, Any]) -> dict[str, Any]:
    return specs.workflow(
        "escape-step",
        [
            {
                "name": "main",
                "container": {
                    "image": "python:3.11",
                    "command": ["sh", "-c", RUN_PROBE],
                    "env": probe_env(targets),
                },
            }
        ],
    )


def experiment(targets: dict[str, Any]) -> dict[str, Any]:
    command = ["sh", "-c", RUN_PROBE + "; echo loss=0.5 x=${trialParameters.x}"]
    return specs.experiment(
        "escape-trial", command, env=probe_env(targets), maxTrialCount=1, parallelTrialCount=1
    )


def notebook(targets: dict[str, Any]) -> dict[str, Any]:
    return specs.notebook(
        "escape-nb",
        "jupyter/base-notebook",
        command=[
            "sh",
            "-c",
            RUN_PROBE + '; exec python3 -m http.server "$PORT"',
        ],
        env=probe_env(targets),
    )


async def reports_in(runtime: LocalRuntime, wanted: int, seconds: float) -> dict[str, Any]:
    """Escape reports found in the namespace's workloads' logs, by workload name."""
    found: dict[str, Any] = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for status in await runtime.list(namespace=NS):
            if status.name in found:
                continue
            reports = escape_reports([line async for line in runtime.logs(NS, status.name)])
            if reports:
                found[status.name] = reports[0]
        if len(found) >= wanted:
            return found
        await asyncio.sleep(0.5)
    raise AssertionError(f"only {sorted(found)} reported within {seconds}s")


async def test_step_trial_and_notebook_cannot_escape(platform: Any) -> None:
    state = Path(platform.state_dir)
    observer = LocalRuntime(state)
    # Another tenant's volume, with a secret in it.
    await observer.create_volume("other-team", "private")
    secret = (await observer.resolve_volume("other-team", "private")) / "secret.txt"
    secret.write_text("other team's secret")
    keys = sorted(str(p) for p in (state / "keys").iterdir())
    assert any(k.endswith("gateway.key") for k in keys)
    ports = {int(url.rsplit(":", 1)[1]) for url in platform.urls.values()}
    targets = {
        "secret_files": [*keys, str(secret), str(state / "runtime" / "uids.json")],
        "listable_dirs": [str(state), str(state / "runtime" / "workloads")],
        "write_paths": ["/usr/x", "/etc/x", str(state / "keys" / "x"), str(secret)],
        "tcp": [["127.0.0.1", p] for p in sorted(ports)]
        + [["127.0.0.1", 5432], ["127.0.0.1", 4222], ["127.0.0.2", 18080]],
    }
    api = httpx.AsyncClient(base_url=platform.gateway_url, timeout=30)
    created = [
        ("/apis/argoproj.io/v1alpha1", "workflows", workflow(targets)),
        ("/apis/kubeflow.org/v1beta1", "experiments", experiment(targets)),
        ("/apis/kubeflow.org/v1", "notebooks", notebook(targets)),
    ]
    try:
        for group, plural, body in created:
            r = await api.post(f"{group}/namespaces/{NS}/{plural}", json=body)
            assert r.status_code == 201, r.text
        reports = await reports_in(observer, 3, seconds=120)
    finally:
        for group, plural, body in created:
            await api.delete(f"{group}/namespaces/{NS}/{plural}/{body['metadata']['name']}")
        await api.aclose()
    kinds = sorted(reports)
    assert any(n.startswith("nb-escape-nb") for n in kinds), kinds
    assert any(n.startswith("wf-") for n in kinds), kinds  # the step's pod
    assert any("escape-trial" in n for n in kinds), kinds
    for name, report in reports.items():
        # The forwarded API address is the one way out, and it is open.
        assert set(escapes(report)) == {"connect 127.0.0.2:18080"}, (name, escapes(report))
        assert report["uid"] != 0 and int(report["CapEff"], 16) == 0, (name, report)
        assert report["NoNewPrivs"] == "1" and report["Seccomp"] == "2", (name, report)
    assert secret.read_text() == "other team's secret"
