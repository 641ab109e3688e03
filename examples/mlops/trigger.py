"""Continuous delivery by event: start the MLOps pipeline when a data pipeline finishes.

It watches the namespace's Argo ``Workflow``s through the Kubernetes watch API (the
``kubernetes`` client against the gateway, or in-cluster inside a notebook) and, for each
workflow labelled ``mlops.shipyard.io/data=true`` that reaches ``Succeeded``, starts one run
of ``pipeline.py``'s pipeline with ``data_version`` set to that workflow's name::

    .venv/bin/python examples/mlops/trigger.py --host http://127.0.0.1:8080

Why a Workflow watch rather than a watch on a bucket prefix: the watch is pushed by the API
server (no polling of object listings), resumes from a resourceVersion after a dropped
connection, needs only the user's (or workload's) API token, while listing the bucket needs
the object store's keys, which workloads never hold, and it fires when the data is complete
(the producing pipeline Succeeded), not when its first object lands. The data pipeline is
any Workflow or KFP run that carries the label, so "new data arrived" is an explicit, typed
event. Workflows that had already finished when the trigger started are not replayed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("mlops.trigger")

LABEL = "mlops.shipyard.io/data=true"
WORKFLOWS = ("argoproj.io", "v1alpha1", "workflows")


def kubernetes_api(host: str | None, token: str | None) -> Any:
    """CustomObjectsApi in-cluster (a notebook, a step), else against ``host``."""
    from kubernetes import client, config

    if host is None:
        config.load_incluster_config()
        return client.CustomObjectsApi()
    cfg = client.Configuration(host=host)
    if token:
        cfg.api_key = {"authorization": f"Bearer {token}"}
    return client.CustomObjectsApi(client.ApiClient(cfg))


def finished_data(api: Any, namespace: str, timeout: int) -> Iterator[dict[str, Any]]:
    """Labelled Workflows as they succeed, from now on: a list, then a watch from its
    resourceVersion (listed again after a 410 Gone or a dropped connection)."""
    from kubernetes import watch
    from kubernetes.client.rest import ApiException

    deadline = time.monotonic() + timeout
    done: set[str] = set()
    version = None
    while time.monotonic() < deadline:
        if version is None:
            listed = api.list_namespaced_custom_object(
                *WORKFLOWS[:2], namespace, WORKFLOWS[2], label_selector=LABEL
            )
            done |= {w["metadata"]["uid"] for w in listed["items"] if _succeeded(w)}
            version = listed["metadata"]["resourceVersion"]
        try:
            for event in watch.Watch().stream(
                api.list_namespaced_custom_object,
                *WORKFLOWS[:2],
                namespace,
                WORKFLOWS[2],
                label_selector=LABEL,
                resource_version=version,
                timeout_seconds=max(1, min(60, int(deadline - time.monotonic()))),
            ):
                wf = event["object"]
                version = wf["metadata"]["resourceVersion"]
                if _succeeded(wf) and wf["metadata"]["uid"] not in done:
                    done.add(wf["metadata"]["uid"])
                    yield wf
        except ApiException as exc:
            if exc.status != 410:
                raise
            version = None  # too old: list again
    return


def _succeeded(wf: dict[str, Any]) -> bool:
    return (wf.get("status") or {}).get("phase") == "Succeeded"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--host", help="the gateway; default: the in-cluster config")
    p.add_argument(
        "--namespace", default=os.environ.get("SHIPYARD_NAMESPACE", "kubeflow-user-example-com")
    )
    p.add_argument("--max-depth", type=int, default=3)
    p.add_argument("--once", action="store_true", help="exit after starting one run")
    p.add_argument("--wait", action="store_true", help="wait for each run to finish")
    p.add_argument("--timeout", type=int, default=24 * 3600, help="stop watching after N s")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import kfp

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from pipeline import compile_pipeline, gateway_token

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    token = gateway_token(args.host) if args.host else None
    api = kubernetes_api(args.host, token)
    kfp_client = kfp.Client(host=args.host, existing_token=token) if args.host else kfp.Client()
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(os.path.join(tmp, "mlops.yaml"))
        log.info("watching Workflows labelled %s in %s", LABEL, args.namespace)
        for wf in finished_data(api, args.namespace, args.timeout):
            name = wf["metadata"]["name"]
            run = kfp_client.create_run_from_pipeline_package(
                package,
                arguments={"data_version": name, "max_depth": args.max_depth},
                run_name=f"mlops-{name}-{uuid.uuid4().hex[:4]}",
                experiment_name="mlops",
                namespace=args.namespace,
                enable_caching=False,
            )
            log.info("data workflow %s Succeeded: run_id=%s started", name, run.run_id)
            if args.wait:
                done = kfp_client.wait_for_run_completion(run.run_id, timeout=900, sleep_duration=1)
                log.info("run_id=%s ended %s", run.run_id, done.state)
            if args.once:
                return 0
    log.info("stopped watching after %s s", args.timeout)
    return 0 if not args.once else 1


if __name__ == "__main__":
    sys.exit(main())
