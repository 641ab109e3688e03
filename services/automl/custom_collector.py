"""Katib's ``Custom`` metrics collector: the user's collector container, beside the trial.

``metricsCollectorSpec.collector.customCollector`` is a Kubernetes container. Katib runs it
as a sidecar of the trial's pod, sharing the metrics volume (when ``source.fileSystemPath``
names one); it reads what the trial wrote and reports the metrics to the DB manager
(``ReportObservationLog``); Katib then takes the trial's observation from the DB.

shipyard does the same through the runtime seam: the trial's workload mounts the trial's
metrics volume (as for the File collector), and when the trial's process has ended (the
moment Katib's sidecar starts collecting, having watched the main process) a second
workload runs the collector's ``command``/``args``/``env`` with that volume mounted at the
same place, for at most ``COLLECT_SECONDS``. It reports through:

- Katib's DB manager API (``api.v1.beta1.DBManager/ReportObservationLog``, served by the
  automl service, services/automl/dbmanager.py, and the gateway, gateway/katib_grpc.py) at
  ``KATIB_DB_MANAGER_ADDRESS``, with the trial's token in ``x-shipyard-trial-token``
  metadata, where the workload can reach that port (the Kubernetes runtime); or
- the Push door (``POST $SHIPYARD_METRICS_URL`` with ``x-shipyard-trial-token:
  $SHIPYARD_METRICS_TOKEN``), which a local sandbox reaches (its one egress is the
  gateway's HTTP API).

The trial's metrics are then the observation log as reported, as Katib reads them.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any

from services.automl import collector
from services.automl import store as automl_store
from services.automl.models import EXPERIMENT_LABEL
from services.automl.push import trial_token
from services.automl.template import TemplateError, job_workload, workload_name
from services.common.runtime import RuntimeBackendError, VolumeNotFound

if TYPE_CHECKING:
    from services.automl.controller import AutoMLController

log = logging.getLogger(__name__)

KIND = "Custom"
COLLECT_SECONDS = 300.0
DEFAULT_DB_MANAGER_ADDRESS = "katib-db-manager.kubeflow:6789"


def custom_container(spec: dict[str, Any]) -> dict[str, Any] | None:
    """The trial's ``metricsCollector.collector.customCollector``."""
    return ((spec.get("metricsCollector") or {}).get("collector") or {}).get("customCollector")


def metrics_path(spec: dict[str, Any]) -> str | None:
    """The metrics file (or directory) the trial and its collector share, if one is named."""
    fsp = ((spec.get("metricsCollector") or {}).get("source") or {}).get("fileSystemPath") or {}
    return fsp.get("path") or None


def shares_volume(spec: dict[str, Any]) -> bool:
    """A Custom collector with a metrics path: the trial and the collector share a volume."""
    kind = ((spec.get("metricsCollector") or {}).get("collector") or {}).get("kind")
    return kind == KIND and metrics_path(spec) is not None


def push_env(ctl: AutoMLController, namespace: str, trial: str) -> dict[str, str]:
    """Where a workload of ``trial`` reports its metrics, and the token that proves it."""
    base = (ctl.settings.metrics_push_url or "$(SHIPYARD_URL)").rstrip("/")
    return {
        "SHIPYARD_METRICS_URL": (
            f"{base}/apis/kubeflow.org/v1beta1/namespaces/{namespace}/trials/{trial}/metrics"
        ),
        "SHIPYARD_METRICS_TOKEN": trial_token(ctl.push_key, namespace, trial),
    }


def collector_workload(
    ctl: AutoMLController, trial: dict[str, Any], claim: str | None
) -> dict[str, Any]:
    """The collector's workload: its container, the trial's env, the metrics volume."""
    meta, spec = trial["metadata"], trial["spec"]
    namespace, name = meta["namespace"], meta["name"]
    container = dict(custom_container(spec) or {})
    container.pop("volumeMounts", None)  # only the metrics volume is the trial's to share
    container["name"] = "metrics-collector"
    env = {
        "KATIB_TRIAL_NAME": name,
        "KATIB_NAMESPACE": namespace,
        "KATIB_DB_MANAGER_ADDRESS": os.environ.get(
            "SHIPYARD_KATIB_DB_MANAGER_ADDRESS", DEFAULT_DB_MANAGER_ADDRESS
        ),
        **push_env(ctl, namespace, name),
    }
    path = metrics_path(spec)
    if path is not None:
        env["KATIB_METRICS_PATH"] = path
    extra = ("katib-metrics", claim, path) if claim is not None and path is not None else None
    run_spec = {"spec": {"template": {"spec": {"containers": [container]}}}}
    workload = job_workload(
        run_spec,
        None,
        namespace=namespace,
        trial_name=name,
        labels={EXPERIMENT_LABEL: meta["labels"].get(EXPERIMENT_LABEL, "")},
        env=env,
        extra_volume=extra,
    )
    workload["name"] = f"{workload_name(name)}-collector"[:253]
    workload["restartPolicy"] = "Never"
    workload.pop("backoffLimit", None)
    return workload


async def collect(
    ctl: AutoMLController, trial: dict[str, Any], claim: str | None
) -> list[collector.MetricLog]:
    """Run the collector once the trial's process has ended; the reported observation log."""
    meta, spec = trial["metadata"], trial["spec"]
    namespace, name = meta["namespace"], meta["name"]
    try:
        workload = collector_workload(ctl, trial, claim)
    except TemplateError as exc:
        log.warning("trial %s/%s: custom collector cannot run: %s", namespace, name, exc)
        return []
    try:
        await ctl.runtime.apply(workload)
        final = await ctl.runtime.wait(namespace, workload["name"], timeout=COLLECT_SECONDS)
        if final.phase.value != "Succeeded":
            log.warning(
                "trial %s/%s: custom collector %s (%s)",
                namespace,
                name,
                final.phase.value,
                final.message or final.reason or f"exit code {final.exit_code}",
            )
    except (VolumeNotFound, RuntimeBackendError, OSError, ValueError, TimeoutError) as exc:
        log.warning("trial %s/%s: custom collector did not run: %s", namespace, name, exc)
    finally:
        with contextlib.suppress(Exception):
            await ctl.runtime.delete(namespace, workload["name"])
    del spec
    async with ctl.db.sessions() as s:
        return await automl_store.read_observations(s, namespace, name)
