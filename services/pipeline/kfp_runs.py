"""KFP runs on top of Workflows: starting one from a pipeline package, and its KFP view.

A run is a Workflow named ``kfp-<run id>`` labelled with the run, experiment and recurring run
ids; its state, timings and task details are read from the Workflow, so the KFP API, the
Argo API and ``shipyard get wf`` always agree.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from services.common.errors import ApiError
from services.common.objectstore import parse_s3_uri
from services.common.resources import ResourceStore
from services.pipeline.events import KFP_RUN_LABEL
from services.pipeline.kfp_exec import ROOT_ANNOTATION
from services.pipeline.kfp_ir import compile_ir, encode, is_ir, split_package
from services.pipeline.kfp_store import KfpStore, new_id, rfc3339
from services.pipeline.models import RETRY_ANNOTATION, WORKFLOW

EXPERIMENT_LABEL = "pipeline.shipyard.io/kfp-experiment-id"
RECURRING_LABEL = "pipeline.shipyard.io/kfp-recurring-run-id"
FINAL_STATES = ("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED")
DEFAULT_EXPERIMENT = "Default"


def workflow_spec_for(package: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """The Workflow spec for a pipeline package: KFP IR or an Argo Workflow."""
    package = split_package(package)
    if is_ir(package):
        return compile_ir(package, parameters)
    if isinstance(package, dict) and package.get("kind") == "Workflow":
        spec = copy.deepcopy(package.get("spec") or {})
        if parameters:
            params = {p["name"]: p for p in (spec.get("arguments") or {}).get("parameters") or []}
            for key, value in parameters.items():
                params[key] = {"name": key, "value": encode(value)}
            spec.setdefault("arguments", {})["parameters"] = list(params.values())
        return spec
    raise ApiError(
        400,
        "the pipeline package is neither KFP IR (pipeline_spec with root and "
        "pipelineInfo) nor an Argo Workflow",
    )


def pipeline_root(body: dict[str, Any], package: dict[str, Any]) -> str | None:
    """The run's ``pipeline_root``: its runtime_config's, else the pipeline's own default.

    Only the shape is checked here (an ``s3://`` or ``minio://`` URI); whether the root lies
    in the namespace's area of the platform's bucket is checked when a task runs
    (:func:`services.pipeline.kfp_exec.pipeline_prefix`).
    """
    root = (body.get("runtime_config") or {}).get("pipeline_root")
    field = "runtime_config.pipeline_root"
    if not root:
        ir = split_package(package)
        root = ir.get("defaultPipelineRoot") if isinstance(ir, dict) else None
        field = "pipeline_spec.defaultPipelineRoot"
    if not root:
        return None
    try:
        parse_s3_uri(str(root))
    except ValueError as exc:
        raise ApiError(
            400, f"{field}: {exc}; pipeline roots are s3:// URIs in the platform's bucket"
        ) from None
    return str(root)


# What a run is made from: a recurring run stores them and passes them to each run it starts.
RUN_SOURCE_FIELDS = (
    "pipeline_spec",
    "pipeline_version_reference",
    "runtime_config",
    "service_account",
)


def run_state(wf: dict[str, Any] | None, stored: str) -> str:
    if wf is None:
        return stored
    status = wf.get("status") or {}
    phase = status.get("phase")
    stopping = bool((wf.get("spec") or {}).get("shutdown"))
    retry = ((wf.get("metadata") or {}).get("annotations") or {}).get(RETRY_ANNOTATION)
    if int(retry or 0) > int(status.get("retryGeneration") or 0):
        return "RUNNING"  # retried; the controller has not reset the failed nodes yet
    if phase in (None, "", "Pending"):
        return "PENDING"
    if phase == "Running":
        if stopping:
            return "CANCELING"
        return "PAUSED" if (wf.get("spec") or {}).get("suspend") else "RUNNING"
    if phase == "Succeeded":
        return "SUCCEEDED"
    return "CANCELED" if stopping else "FAILED"


_NODE_STATES = {
    "Pending": "PENDING",
    "Running": "RUNNING",
    "Succeeded": "SUCCEEDED",
    "Skipped": "SKIPPED",
    "Omitted": "SKIPPED",
    "Failed": "FAILED",
    "Error": "FAILED",
}


def run_json(row: dict[str, Any], wf: dict[str, Any] | None) -> dict[str, Any]:
    body = dict(row["body"])
    status = (wf or {}).get("status") or {}
    state = run_state(wf, row["state"])
    run: dict[str, Any] = {
        "run_id": row["id"],
        "experiment_id": row["experiment_id"],
        "display_name": row["display_name"],
        "description": row["description"],
        "storage_state": row["storage_state"],
        "state": state,
        "created_at": rfc3339(row["created_at"]),
        "scheduled_at": body.get("scheduled_at") or rfc3339(row["created_at"]),
        "finished_at": status.get("finishedAt") or rfc3339(row.get("finished_at")),
        "recurring_run_id": row.get("recurring_run_id") or None,
        "runtime_config": body.get("runtime_config") or {},
        "service_account": body.get("service_account") or "",
        "state_history": body.get("state_history") or [],
    }
    for key in ("pipeline_spec", "pipeline_version_reference", "pipeline_version_id"):
        if body.get(key):
            run[key] = body[key]
    if state == "FAILED" and status.get("message"):
        run["error"] = {"code": 2, "message": status["message"]}
    tasks = []
    for node in (status.get("nodes") or {}).values():
        if node.get("type") != "Pod":
            continue
        tasks.append(
            {
                "run_id": row["id"],
                "task_id": node["id"],
                "display_name": node.get("displayName"),
                "pod_name": node["id"],
                "create_time": node.get("startedAt"),
                "start_time": node.get("startedAt"),
                "end_time": node.get("finishedAt"),
                "state": _NODE_STATES.get(node.get("phase", ""), "RUNTIME_STATE_UNSPECIFIED"),
                **(
                    {"error": {"code": 2, "message": node["message"]}}
                    if node.get("phase") in ("Failed", "Error") and node.get("message")
                    else {}
                ),
            }
        )
    run["run_details"] = {"task_details": tasks}
    return run


class RunService:
    """Creates and reads KFP runs (used by the REST API and the recurring-run scheduler)."""

    def __init__(self, kfp: KfpStore, store: ResourceStore) -> None:
        self.kfp = kfp
        self.store = store

    async def default_experiment(self, namespace: str) -> str:
        for row in await self.kfp.rows(
            "kfp_experiments", namespace=namespace, display_name=DEFAULT_EXPERIMENT
        ):
            return str(row["id"])
        exp_id = new_id()
        await self.kfp.insert(
            "kfp_experiments",
            id=exp_id,
            namespace=namespace,
            display_name=DEFAULT_EXPERIMENT,
            description="",
            storage_state="AVAILABLE",
            created_at=datetime.now(UTC),
        )
        return exp_id

    async def package_for(self, body: dict[str, Any], namespace: str) -> dict[str, Any]:
        """What a run in ``namespace`` runs: its inline ``pipeline_spec``, or a pipeline version
        (by id, or a pipeline's latest) of that namespace. Another namespace's version or
        pipeline gets the very answer a missing one gets (KFP's NOT_FOUND), so a tenant can
        neither run another's pipeline by id nor learn that the id exists (issue 10)."""
        if body.get("pipeline_spec"):
            return dict(body["pipeline_spec"])
        ref = body.get("pipeline_version_reference") or {}
        version_id = ref.get("pipeline_version_id") or body.get("pipeline_version_id")
        if version_id:
            missing = ApiError(404, f"pipeline version {version_id} not found")
            versions = await self.kfp.rows("kfp_versions", id=version_id)
            if not versions or not await self._pipeline_in(versions[0]["pipeline_id"], namespace):
                raise missing
            return dict(versions[0]["spec"])
        if ref.get("pipeline_id"):
            if not await self._pipeline_in(ref["pipeline_id"], namespace):
                raise ApiError(404, f"pipeline {ref['pipeline_id']} not found")
            versions = await self.kfp.rows("kfp_versions", pipeline_id=ref["pipeline_id"])
            if not versions:
                raise ApiError(404, f"pipeline {ref['pipeline_id']} has no versions")
            latest = max(versions, key=lambda v: v["created_at"])
            return dict(latest["spec"])
        raise ApiError(400, "a run needs pipeline_spec or pipeline_version_reference")

    async def _pipeline_in(self, pipeline_id: str, namespace: str) -> bool:
        """True if the pipeline exists and belongs to ``namespace`` (every pipeline has one:
        shipyard has no shared, namespace-less pipelines)."""
        rows = await self.kfp.rows("kfp_pipelines", id=pipeline_id)
        return bool(rows) and rows[0]["namespace"] == namespace

    async def start(
        self,
        namespace: str,
        body: dict[str, Any],
        *,
        recurring_run_id: str = "",
        workflow_name: str | None = None,
        scheduled_at: datetime | None = None,
    ) -> dict[str, Any]:
        package = await self.package_for(body, namespace)
        params = dict((body.get("runtime_config") or {}).get("parameters") or {})
        spec = workflow_spec_for(package, params)
        experiment_id = body.get("experiment_id") or await self.default_experiment(namespace)
        await self.kfp.get("kfp_experiments", experiment_id, "experiment")
        run_id = new_id()
        name = workflow_name or f"kfp-{run_id}"
        labels = {KFP_RUN_LABEL: run_id, EXPERIMENT_LABEL: experiment_id}
        if recurring_run_id:
            labels[RECURRING_LABEL] = recurring_run_id
        annotations = {
            "pipelines.kubeflow.org/run_name": str(body.get("display_name") or name)[:250]
        }
        root = pipeline_root(body, package)
        if root:
            annotations[ROOT_ANNOTATION] = root
        wf = await self.store.create(
            WORKFLOW,
            namespace,
            {
                "metadata": {
                    "name": name,
                    "labels": labels,
                    "annotations": annotations,
                },
                "spec": spec,
            },
        )
        now = datetime.now(UTC)
        stored = {k: body[k] for k in RUN_SOURCE_FIELDS if body.get(k)}
        stored["scheduled_at"] = rfc3339(scheduled_at or now)
        stored["state_history"] = [{"update_time": rfc3339(now), "state": "PENDING"}]
        row = {
            "id": run_id,
            "namespace": namespace,
            "experiment_id": experiment_id,
            "display_name": body.get("display_name") or name,
            "description": body.get("description") or "",
            "storage_state": "AVAILABLE",
            "state": "PENDING",
            "workflow": wf["metadata"]["name"],
            "recurring_run_id": recurring_run_id,
            "body": stored,
            "created_at": now,
            "finished_at": None,
        }
        await self.kfp.insert("kfp_runs", **row)
        return run_json(row, wf)

    async def workflow(self, row: dict[str, Any]) -> dict[str, Any] | None:
        return await self.store.find(WORKFLOW, row["namespace"], row["workflow"])

    async def view(self, row: dict[str, Any]) -> dict[str, Any]:
        return run_json(row, await self.workflow(row))

    async def on_workflow_finished(self, wf: dict[str, Any]) -> None:
        """Record the final state in the run's row (listing and retention read it)."""
        run_id = (wf["metadata"].get("labels") or {}).get(KFP_RUN_LABEL)
        if not run_id:
            return
        try:
            row = await self.kfp.get("kfp_runs", run_id, "run")
        except ApiError:
            return
        state = run_state(wf, row["state"])
        if state == row["state"]:
            return
        body = dict(row["body"])
        history = list(body.get("state_history") or [])
        now = datetime.now(UTC)
        history.append({"update_time": rfc3339(now), "state": state})
        body["state_history"] = history
        await self.kfp.update("kfp_runs", run_id, state=state, finished_at=now, body=body)
