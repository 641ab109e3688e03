# mypy: disable-error-code="valid-type"
# (kfp reads a component's outputs from a NamedTuple(...) return annotation)
"""The MLOps golden path: a KFP v2 pipeline that trains, publishes and continuously delivers.

Steps (each a lightweight Python component; see docs/mlops.md):

1. ``fetch-data``: the iris data set (bundled with scikit-learn, no download), split into a
   training and a held-out validation set, deterministic for a given ``seed``.
2. ``train``: a DecisionTreeClassifier of ``max_depth``, published as a KFP ``Model``
   artifact: a directory holding ``model.joblib`` in the object store. Its ``s3://`` URI is
   the InferenceService's ``storageUri``; KServe's sklearn server reads ``model.joblib``.
3. ``evaluate``: accuracy on the held-out set, logged as a KFP metric; a model below
   ``min_accuracy`` fails the run here and is never deployed (the quality gate).
4. ``rollout``: talks to the Kubernetes API (``kubernetes`` client, in-cluster config). The
   first run creates InferenceService ``mlops-model``; a later run with a new model starts
   it as a canary beside the current one (``canaryTrafficPercent``).
5. ``release``: sends the validation set to the service through the gateway (KServe V1
   protocol) until it has seen answers of both revisions, compares the canary's accuracy
   with the current model's, and promotes the canary (``canaryTrafficPercent`` removed, as
   KServe's promote) or rolls back (the previous ``storageUri`` restored, as KServe's
   rollback; the running previous revision takes all traffic at once).

Run once against a running platform (``make up``)::

    .venv/bin/python examples/mlops/pipeline.py --host http://127.0.0.1:8080

It compiles the pipeline, runs it with ``kfp.Client``, waits, and exits 0 once
``mlops-model`` is Ready and answers a prediction. ``--schedule`` / ``--every`` make it a
recurring run instead; ``trigger.py`` starts a run when a data pipeline finishes.

No ``from __future__ import annotations`` here: kfp reads the components' annotations as
types, not strings.
"""

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from typing import Any, NamedTuple

from kfp import compiler, dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

log = logging.getLogger("mlops")

#: The local runtime runs components in the platform's Python (scikit-learn, joblib and the
#: kubernetes client are there); on Kubernetes, use an image that has them.
BASE_IMAGE = "python:3.11"
SERVICE_NAME = "mlops-model"
ISVC = ("serving.kserve.io", "v1beta1", "inferenceservices")


@dsl.component(base_image=BASE_IMAGE, packages_to_install=[])
def fetch_data(
    seed: int, data_version: str, train_data: Output[Dataset], validation_data: Output[Dataset]
) -> None:
    """Iris, split 70/30 (stratified); JSON ``{"x": [[...]], "y": [...]}`` per set."""
    import json

    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    x, y = load_iris(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.3, random_state=seed, stratify=y
    )
    for out, xs, ys in ((train_data, x_train, y_train), (validation_data, x_val, y_val)):
        with open(out.path, "w") as f:
            json.dump({"x": xs.tolist(), "y": ys.tolist()}, f)
        out.metadata.update({"rows": len(ys), "seed": seed, "data_version": data_version})


@dsl.component(base_image=BASE_IMAGE, packages_to_install=[])
def train(train_data: Input[Dataset], max_depth: int, model: Output[Model]) -> None:
    """Fit a decision tree; publish it as a directory with ``model.joblib`` (KServe's
    sklearn layout), so the artifact's URI is a storageUri the sklearn server loads."""
    import json
    import os

    import joblib
    from sklearn.tree import DecisionTreeClassifier

    with open(train_data.path) as f:
        data = json.load(f)
    estimator = DecisionTreeClassifier(max_depth=max_depth, random_state=0)
    estimator.fit(data["x"], data["y"])
    os.makedirs(model.path, exist_ok=True)
    joblib.dump(estimator, os.path.join(model.path, "model.joblib"))
    model.metadata.update({"framework": "sklearn", "max_depth": max_depth})


@dsl.component(base_image=BASE_IMAGE, packages_to_install=[])
def evaluate(
    model: Input[Model],
    validation_data: Input[Dataset],
    min_accuracy: float,
    metrics: Output[Metrics],
) -> float:
    """Accuracy on the held-out set (a KFP metric); below ``min_accuracy`` the run fails."""
    import json
    import os

    import joblib

    with open(validation_data.path) as f:
        data = json.load(f)
    estimator = joblib.load(os.path.join(model.path, "model.joblib"))
    accuracy = float(estimator.score(data["x"], data["y"]))
    metrics.log_metric("accuracy", accuracy)
    # Also as the artifact's content: shipyard stores every output artifact as an object
    # (KFP's own backend keeps a Metrics artifact's values in its metadata only).
    with open(metrics.path, "w") as f:
        json.dump({"accuracy": accuracy}, f)
    if accuracy < min_accuracy:
        raise RuntimeError(f"accuracy {accuracy:.3f} is below the gate {min_accuracy:.3f}")
    return accuracy


@dsl.component(base_image=BASE_IMAGE, packages_to_install=[])
def rollout(model: Input[Model], service_name: str, canary_percent: int) -> NamedTuple(
    "Rollout", [("action", str), ("previous_uri", str)]
):
    """Create the InferenceService, or start the new model as a canary beside the current
    one. ``action``: created, unchanged, canary or canary-failed; ``previous_uri``: the
    storageUri serving before (kept in an annotation, so a run that died mid-canary is
    rolled back to the right model by the next one)."""
    import time

    from kubernetes import client, config
    from kubernetes.client.rest import ApiException

    config.load_incluster_config()  # as in any Kubeflow pod: the step's own identity
    with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
        ns = f.read().strip()
    api = client.CustomObjectsApi()
    where = ("serving.kserve.io", "v1beta1", ns, "inferenceservices", service_name)
    stable_key = "mlops.shipyard.io/stable-storage-uri"

    def wait(what: str, done: Any) -> str:
        """Poll the service until ``done(status)`` names an outcome (its current
        generation observed), or fail after 5 minutes with its last status."""
        deadline = time.monotonic() + 300
        while True:
            obj = api.get_namespaced_custom_object(*where)
            status = obj.get("status") or {}
            current = status.get("observedGeneration") == obj["metadata"].get("generation")
            outcome = done(status) if current else None
            if outcome:
                return str(outcome)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{service_name} not {what} after 300 s: {status}")
            time.sleep(0.2)

    def condition(status: dict, kind: str) -> dict:
        return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})

    try:
        current = api.get_namespaced_custom_object(*where)
    except ApiException as exc:
        if exc.status != 404:
            raise
        body = {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {"name": service_name, "labels": {"app": "mlops"}},
            "spec": {
                "predictor": {
                    "model": {"modelFormat": {"name": "sklearn"}, "storageUri": model.uri}
                }
            },
        }
        api.create_namespaced_custom_object(*where[:-1], body)
        wait("Ready", lambda s: condition(s, "Ready").get("status") == "True" and "created")
        return ("created", "")
    predictor = current["spec"]["predictor"]
    serving_uri = predictor["model"]["storageUri"]
    annotations = current["metadata"].get("annotations") or {}
    previous = annotations.get(stable_key) or serving_uri  # a canary left by a failed run
    if serving_uri == model.uri and "canaryTrafficPercent" not in predictor:
        return ("unchanged", serving_uri)
    patch = {
        "metadata": {"annotations": {stable_key: previous}},
        "spec": {
            "predictor": {
                "canaryTrafficPercent": canary_percent,
                "model": {"storageUri": model.uri},
            }
        },
    }
    api.patch_namespaced_custom_object(*where, patch)

    def split_live(status: dict) -> str | None:
        if condition(status, "PredictorReady").get("reason") == "RevisionFailed":
            return "canary-failed"
        traffic = (status.get("components") or {}).get("predictor", {}).get("traffic") or []
        latest = [t for t in traffic if t.get("tag") == "latest"]
        return "canary" if latest and latest[0]["percent"] == canary_percent else None

    return (wait("split", split_live), previous)


@dsl.component(base_image=BASE_IMAGE, packages_to_install=[])
def release(
    model: Input[Model],
    validation_data: Input[Dataset],
    service_name: str,
    action: str,
    previous_uri: str,
    min_improvement: float,
    force_rollback: bool,
    max_requests: int,
) -> str:
    """Check the service through the gateway and finish a canary: promote it when it
    answers with the new model and is at least ``min_improvement`` more accurate than the
    current model on the validation set, else roll back to ``previous_uri``."""
    import json
    import os
    import time

    import joblib
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException

    config.load_incluster_config()  # the API server (the gateway) also routes the data plane
    with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
        ns = f.read().strip()
    with open(validation_data.path) as f:
        data = json.load(f)
    x, y = data["x"], data["y"]
    new = [int(p) for p in joblib.load(os.path.join(model.path, "model.joblib")).predict(x)]
    raw = client.ApiClient()
    api = client.CustomObjectsApi(raw)
    where = ("serving.kserve.io", "v1beta1", ns, "inferenceservices", service_name)

    def accuracy(predictions: list) -> float:
        return sum(int(p) == t for p, t in zip(predictions, y, strict=True)) / len(y)

    def predict() -> list:
        """The validation set's V1 predictions, from whichever revision answers."""
        path = f"/serving/{ns}/{service_name}/v1/models/{service_name}:predict"
        for _ in range(100):
            try:
                got = raw.call_api(
                    path,
                    "POST",
                    header_params={"Content-Type": "application/json"},
                    body={"instances": x},
                    auth_settings=["BearerToken"],
                    response_type="object",
                    _return_http_data_only=True,
                )
                return [int(p) for p in got["predictions"]]
            except ApiException as exc:
                if exc.status not in (429, 502, 503):  # rate limited, or a server moving
                    raise
                time.sleep(0.2)
        raise RuntimeError(f"{path}: no answer")

    if action in ("created", "unchanged"):
        served = predict()
        if served != new:
            raise RuntimeError(f"{service_name} does not answer with the published model")
        return f"{action}: serving {model.uri} (accuracy {accuracy(served):.3f})"
    canary_seen, stable = False, None
    for _ in range(max_requests if action == "canary" else 0):
        served = predict()
        canary_seen = canary_seen or served == new
        stable = accuracy(served) if served != new else stable
        if canary_seen and stable is not None:
            break
    stable = accuracy(new) if stable is None and canary_seen else stable  # same answers
    candidate = accuracy(new)
    why = ""
    if force_rollback:
        why = "rollback forced"
    elif not canary_seen:
        why = f"the canary never answered with the new model ({action})"
    elif stable is not None and candidate < stable + min_improvement:
        why = f"canary accuracy {candidate:.3f} < current {stable:.3f} + {min_improvement}"
    patch: dict = {
        "metadata": {"annotations": {"mlops.shipyard.io/stable-storage-uri": None}},
        "spec": {"predictor": {"canaryTrafficPercent": None}},
    }
    if why:
        patch["spec"]["predictor"]["model"] = {"storageUri": previous_uri}
    api.patch_namespaced_custom_object(*where, patch)
    deadline = time.monotonic() + 300
    while True:  # all traffic on one revision, the one the spec now names
        obj = api.get_namespaced_custom_object(*where)
        status = obj.get("status") or {}
        traffic = (status.get("components") or {}).get("predictor", {}).get("traffic") or []
        current = status.get("observedGeneration") == obj["metadata"].get("generation")
        if current and [t["percent"] for t in traffic] == [100]:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{service_name}: traffic still split after 300 s: {status}")
        time.sleep(0.2)
    if why:
        return f"rolled back to {previous_uri}: {why}"
    return f"promoted {model.uri}: accuracy {candidate:.3f} (was {stable:.3f})"


@dsl.pipeline(
    name="mlops-golden-path",
    description="Fetch data, train, evaluate, publish and continuously deliver an sklearn "
    "model to the InferenceService mlops-model (canary, then promote or roll back).",
)
def mlops_pipeline(
    max_depth: int = 3,
    seed: int = 1,
    data_version: str = "iris",
    min_accuracy: float = 0.5,
    service_name: str = SERVICE_NAME,
    canary_percent: int = 20,
    min_improvement: float = 0.0,
    force_rollback: bool = False,
    max_requests: int = 40,
) -> None:
    data = fetch_data(seed=seed, data_version=data_version)
    trained = train(train_data=data.outputs["train_data"], max_depth=max_depth)
    evaluated = evaluate(
        model=trained.outputs["model"],
        validation_data=data.outputs["validation_data"],
        min_accuracy=min_accuracy,
    )
    rolled = rollout(
        model=trained.outputs["model"], service_name=service_name, canary_percent=canary_percent
    ).after(evaluated)
    released = release(
        model=trained.outputs["model"],
        validation_data=data.outputs["validation_data"],
        service_name=service_name,
        action=rolled.outputs["action"],
        previous_uri=rolled.outputs["previous_uri"],
        min_improvement=min_improvement,
        force_rollback=force_rollback,
        max_requests=max_requests,
    )
    # Every run trains on fresh data and must deploy: no step is taken from the cache.
    for task in (data, trained, evaluated, rolled, released):
        task.set_caching_options(False)


# -- running it: compile, submit with kfp.Client, wait, check the service ------------------


def gateway_token(host: str) -> str | None:
    """A bearer token for the gateway: ``SHIPYARD_TOKEN``, else the one `shipyard login`
    stored (refreshed when near expiry); none in single-user mode."""
    if os.environ.get("SHIPYARD_TOKEN"):
        return os.environ["SHIPYARD_TOKEN"]
    try:
        from shipyard.auth import bearer_headers
    except ImportError:  # the example runs without the shipyard CLI installed, too
        return None
    header = bearer_headers(host).get("Authorization", "")
    return header.removeprefix("Bearer ") or None


def compile_pipeline(path: str) -> str:
    compiler.Compiler().compile(mlops_pipeline, path)
    return path


def arguments_from(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "max_depth": args.max_depth,
        "seed": args.seed,
        "data_version": args.data_version,
        "min_accuracy": args.min_accuracy,
        "service_name": args.service_name,
        "canary_percent": args.canary_percent,
        "min_improvement": args.min_improvement,
        "force_rollback": args.force_rollback,
    }


def run_once(kfp_client: Any, package: str, args: argparse.Namespace) -> Any:
    """Start one run of the compiled pipeline and wait for it to finish; the run."""
    arguments = arguments_from(args)
    run = kfp_client.create_run_from_pipeline_package(
        package,
        arguments=arguments,
        run_name=f"mlops-{uuid.uuid4().hex[:8]}",
        experiment_name="mlops",
        namespace=args.namespace,
        enable_caching=False,
    )
    log.info("run_id=%s started (%s)", run.run_id, json.dumps(arguments, sort_keys=True))
    return kfp_client.wait_for_run_completion(run.run_id, timeout=args.timeout, sleep_duration=1)


def schedule(kfp_client: Any, package: str, args: argparse.Namespace) -> Any:
    """A recurring run: every ``--every`` seconds, or on the ``--schedule`` cron (KFP's
    6 fields, seconds first); one run at a time, no catch-up of missed slots."""
    experiment = kfp_client.create_experiment("mlops", namespace=args.namespace)
    return kfp_client.create_recurring_run(
        experiment.experiment_id,
        job_name=f"mlops-delivery-{uuid.uuid4().hex[:6]}",
        cron_expression=args.schedule,
        interval_second=args.every,
        pipeline_package_path=package,
        params=arguments_from(args),
        max_concurrency=1,
        no_catchup=True,
        enable_caching=False,
    )


def service_answers(
    host: str, token: str | None, namespace: str, name: str, timeout: float
) -> dict[str, Any]:
    """Wait until InferenceService ``name`` is Ready and answers a V1 prediction through
    the gateway (the kubernetes client, as any script would); its status and the answer."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    cfg = client.Configuration(host=host)
    if token:
        cfg.api_key = {"authorization": f"Bearer {token}"}
    api_client = client.ApiClient(cfg)
    api = client.CustomObjectsApi(api_client)
    deadline = time.monotonic() + timeout
    while True:
        obj = api.get_namespaced_custom_object(*ISVC[:2], namespace, ISVC[2], name)
        conditions = (obj.get("status") or {}).get("conditions") or []
        if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
            try:
                answer = api_client.call_api(
                    f"/serving/{namespace}/{name}/v1/models/{name}:predict",
                    "POST",
                    header_params={"Content-Type": "application/json"},
                    body={"instances": [[6.8, 2.8, 4.8, 1.4], [5.1, 3.5, 1.4, 0.2]]},
                    auth_settings=["BearerToken"],
                    response_type="object",
                    _return_http_data_only=True,
                )
                return {"status": obj["status"], "spec": obj["spec"], "answer": answer}
            except ApiException as exc:
                if exc.status not in (429, 502, 503):
                    raise
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} is not Ready and answering: {obj.get('status')}")
        time.sleep(0.2)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--host", default=os.environ.get("SHIPYARD_URL", "http://127.0.0.1:8080"))
    p.add_argument(
        "--namespace",
        default=os.environ.get("SHIPYARD_NAMESPACE", "kubeflow-user-example-com"),
        help="the profile's namespace the run and mlops-model live in",
    )
    p.add_argument("--max-depth", type=int, default=3, help="the tree's depth (model quality)")
    p.add_argument("--seed", type=int, default=1, help="the data split")
    p.add_argument("--data-version", default="iris", help="recorded on the data sets")
    p.add_argument("--min-accuracy", type=float, default=0.5, help="the quality gate")
    p.add_argument("--service-name", default=SERVICE_NAME)
    p.add_argument("--canary-percent", type=int, default=20)
    p.add_argument("--min-improvement", type=float, default=0.0)
    p.add_argument("--force-rollback", action="store_true", help="roll a canary back anyway")
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for the run")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--schedule", help="a recurring run on this cron, e.g. '0 0 * * * *'")
    when.add_argument("--every", type=int, help="a recurring run every N seconds")
    p.add_argument("--output", help="also write the compiled pipeline (KFP IR YAML) here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import kfp

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    token = gateway_token(args.host)
    kfp_client = kfp.Client(host=args.host, existing_token=token)
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(args.output or os.path.join(tmp, "mlops.yaml"))
        if args.schedule or args.every:
            job = schedule(kfp_client, package, args)
            log.info("recurring_run_id=%s scheduled", job.recurring_run_id)
            return 0
        run = run_once(kfp_client, package, args)
    if run.state != "SUCCEEDED":
        log.error("run_id=%s ended %s: %s", run.run_id, run.state, run.error)
        return 1
    found = service_answers(args.host, token, args.namespace, args.service_name, timeout=120)
    predictor = found["spec"]["predictor"]
    log.info(
        "run_id=%s SUCCEEDED; %s Ready, serving %s (traffic %s), answer %s",
        run.run_id,
        args.service_name,
        predictor["model"]["storageUri"],
        json.dumps(found["status"]["components"]["predictor"].get("traffic")),
        json.dumps(found["answer"]),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
