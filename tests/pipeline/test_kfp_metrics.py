"""KFP metrics artifacts with the real kfp client: ``log_metric``, ``log_confusion_matrix``
and ``log_roc_curve`` write only the artifact's metadata (no file), and, as with KFP's
launcher, the task still succeeds: the artifacts are recorded (listed by the v2beta1
artifact API) with their metadata on the run's Workflow node, where the dashboard reads them.
A Dataset the task does not write still fails it.
"""

import time
from typing import Any

import httpx
from kfp import dsl
from kfp.dsl import ClassificationMetrics, Dataset, Metrics, Output

from tests.pipeline.conftest import Gateway, call, unique

FINAL = ("SUCCEEDED", "FAILED", "CANCELED")


@dsl.component(base_image="python:3.11")
def evaluate(lr: float, scores: Output[Metrics], quality: Output[ClassificationMetrics]) -> None:
    scores.log_metric("accuracy", 1 - lr)
    quality.log_confusion_matrix(["cat", "dog"], [[8, 2], [1, 9]])
    quality.log_roc_curve([0.0, 0.5, 1.0], [0.0, 0.8, 1.0], [1.0, 0.5, 0.0])


@dsl.pipeline(name="metrics-only")
def metrics_pipeline(lr: float = 0.25) -> None:
    evaluate(lr=lr).set_caching_options(False)


@dsl.component(base_image="python:3.11")
def forget(out: Output[Dataset]) -> None:
    print("writes nothing to", out.path)


@dsl.pipeline(name="forgets-dataset")
def forgetful_pipeline() -> None:
    forget().set_caching_options(False)


async def _finished(kfp_client: Any, func: Any) -> Any:
    run = await call(kfp_client.create_run_from_pipeline_func, func, run_name=unique("metrics"))
    deadline = time.monotonic() + 120
    while True:
        got = await call(kfp_client.get_run, run.run_id)
        if got.state in FINAL:
            return got
        assert time.monotonic() < deadline, f"run still {got.state}"
        await call(time.sleep, 0.3)


async def test_metrics_artifacts_need_no_file(gateway: Gateway, kfp_client: Any) -> None:
    run = await _finished(kfp_client, metrics_pipeline)
    assert run.state == "SUCCEEDED", run.error
    ns = gateway.namespace
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as c:
        wf = (
            await c.get(f"/apis/argoproj.io/v1alpha1/namespaces/{ns}/workflows/kfp-{run.run_id}")
        ).json()
        listed = (
            await c.get("/apis/v2beta1/artifacts", params={"namespace": ns, "page_size": 100})
        ).json()
    pod = next(n for n in wf["status"]["nodes"].values() if n["displayName"] == "evaluate")
    arts = {a["name"]: a for a in pod["outputs"]["artifacts"]}
    assert set(arts) == {"scores", "quality"}
    assert "s3" not in arts["scores"]  # nothing was written, so nothing is stored
    assert arts["scores"]["kfp"]["type"]["schemaTitle"] == "system.Metrics"
    assert arts["scores"]["kfp"]["metadata"] == {"accuracy": 0.75}
    quality = arts["quality"]["kfp"]["metadata"]
    assert quality["confusionMatrix"] == {
        "annotationSpecs": [{"displayName": "cat"}, {"displayName": "dog"}],
        "rows": [{"row": [8, 2]}, {"row": [1, 9]}],
    }
    assert [p["recall"] for p in quality["confidenceMetrics"]] == [0.0, 0.8, 1.0]
    mine = {a["name"]: a for a in listed["artifacts"] if run.run_id in a["uri"]}
    assert mine["scores"]["artifact_type"] == "system.Metrics"
    assert mine["scores"]["metadata"] == {"accuracy": 0.75}
    assert "artifact_size" not in mine["scores"]
    assert mine["quality"]["artifact_type"] == "system.ClassificationMetrics"


async def test_a_dataset_never_written_still_fails_the_task(kfp_client: Any) -> None:
    run = await _finished(kfp_client, forgetful_pipeline)
    assert run.state == "FAILED"
    assert "did not produce output artifact(s) out" in run.error.message
