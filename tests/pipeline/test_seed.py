"""The seed document's PersistentVolumeClaim and Workflow, exactly as written there."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import yaml

from tests.pipeline.conftest import WF_PATH, PipelineService, nodes_by_display

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pipelines" / "seed-workflow.yaml"


def seed_yaml_blocks() -> list[dict]:
    text = EXAMPLE.read_text()
    return list(yaml.safe_load_all(text))


async def test_run_seed_workflow_succeeds(pipeline: PipelineService) -> None:
    """The seed's PVC + Workflow: repeat-line writes 15 lines to the claim, print-text prints
    them. The claim's volume is created with ``runtime.create_volume`` here (the notebook
    service creates it when the PVC object is created; that service is not running here)."""
    ns = "kubeflow-user-example-com"
    pvc, workflow = seed_yaml_blocks()
    assert pvc["kind"] == "PersistentVolumeClaim" and workflow["kind"] == "Workflow"
    await pipeline.runtime.create_volume(ns, pvc["metadata"]["name"])
    wf = await pipeline.run(ns, workflow, timeout=60)
    assert wf["status"]["phase"] == "Succeeded", wf["status"]
    nodes = nodes_by_display(wf)
    assert nodes["repeat-line"]["phase"] == "Succeeded"
    assert nodes["print-text"]["phase"] == "Succeeded"
    assert nodes[wf["metadata"]["name"]]["type"] == "DAG"
    assert nodes["print-text"]["boundaryID"] == wf["metadata"]["name"]
    assert wf["status"]["progress"] == "2/2"
    async with httpx.AsyncClient(base_url=pipeline.url, headers=pipeline.headers(ns)) as c:
        r = await c.get(
            f"{WF_PATH.format(ns=ns)}/{wf['metadata']['name']}/log", params={"step": "print-text"}
        )
    assert r.status_code == 200, r.text
    lines = r.text.splitlines()
    assert lines == ["Hello"] * 15
    assert re.match(r"kubeflow-test-", wf["metadata"]["name"])
