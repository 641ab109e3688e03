"""Workloads call the API as their namespace, with the token the runtime injects.

The platform runs in trusted-header mode here (the test acts as a person through
`kubeflow-userid` from 127.0.0.1), so the step's bearer token is really checked by the
gateway: accepted for its own namespace, refused for another.
"""

from __future__ import annotations

from typing import Any

import httpx

from services.common.runtime.sandbox import API_ADDRESS
from tests import specs
from tests.conftest import ADMIN_USER, create_profile, workflow_logs

ADMIN = {"kubeflow-userid": ADMIN_USER}
STEP = """
set -u
echo "url=$SHIPYARD_URL namespace=$SHIPYARD_NAMESPACE"
shipyard get workflows
if shipyard get workflows -n team-b 2>err.txt; then echo "team-b should be refused"; exit 1; fi
cat err.txt
"""


def test_workload_token_scoped_to_its_namespace(trusted_header_platform: Any) -> None:
    platform = trusted_header_platform
    api = httpx.Client(base_url=platform.gateway_url, headers=ADMIN, timeout=10)
    for team in ("team-a", "team-b"):
        create_profile(api, team)
    step = {"image": "python:3.11", "command": ["sh", "-c", STEP]}
    workflow = specs.workflow("whoami", [{"name": "main", "container": step}])
    logs = workflow_logs(api, "team-a", workflow, within=60)
    host, port = API_ADDRESS  # inside its sandbox: the address forwarded to the gateway
    assert f"url=http://{host}:{port} namespace=team-a" in logs
    assert "whoami" in logs  # its own namespace's workflows, listed with its token
    assert "team-b" in logs and "cannot" in logs.lower()  # the 403 Status, printed
    # No token (service-account or identity assertion: JWTs start with "eyJ") is logged.
    for log_file in (platform.state_dir / "logs").glob("*.log"):
        assert "eyJ" not in log_file.read_text(), log_file
