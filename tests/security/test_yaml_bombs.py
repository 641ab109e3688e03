"""YAML alias bombs are refused before validation (issue 10, item 5), wherever a tenant's
YAML is parsed: an API body sent as application/yaml, a KFP pipeline package upload, a Katib
trial template kept in a ConfigMap, and ``shipyard apply -f``.

The bomb is 338 bytes; parsed as ``yaml.safe_load`` does, it is a few dozen nodes that
expand to 531 441 list items (3 MB as JSON) as soon as anything walks them. Each site must
answer with a 4xx whose message names the aliases, within 100 ms (the fastest of three
attempts), and store nothing.
Real services (uvicorn in this loop) on their own databases, reached with minted gateway
assertions as the gateway would send them.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from services.automl.app import create_app as create_automl
from services.automl.settings import Settings as AutomlSettings
from services.pipeline.app import create_app as create_pipeline
from services.pipeline.settings import Settings as PipelineSettings
from shipyard import cli
from tests.conftest import InProcessService, own_service_fixture

NS = "team-a"
ARGO = f"/apis/argoproj.io/v1alpha1/namespaces/{NS}"
KATIB = f"/apis/kubeflow.org/v1beta1/namespaces/{NS}"
CONFIGMAPS = f"/api/v1/namespaces/{NS}/configmaps"


def laughs(kind: str, name: str) -> str:
    """A 338-byte ``kind`` whose step's ``withItems`` nests six levels of nine aliases."""
    levels = "abcdef"
    lists = ["&a [l,l,l,l,l,l,l,l,l]"] + [
        f"&{cur} [" + ",".join([f"*{prev}"] * 9) + "]"
        for prev, cur in zip(levels, levels[1:], strict=False)
    ]
    text = (
        f"kind: {kind}\nmetadata: {{name: {name}}}\nspec:\n  templates:\n  - name: m\n"
        f"    steps: [[{{name: s, template: m, withItems: [{', '.join(lists)}]}}]]\n"
    )
    text += "#" * (337 - len(text)) + "\n"
    assert len(text) == 338
    return text


def test_bomb_expands_without_a_bound() -> None:
    """What the tests below defend against: plain safe_load accepts it, 531 441 items deep."""
    items = yaml.safe_load(laughs("Workflow", "x"))["spec"]["templates"][0]["steps"][0][0]
    assert len(str(items["withItems"][-1])) > 2_000_000


pipeline = own_service_fixture(
    create_pipeline, PipelineSettings, "shipyard_sec_yaml_pl", namespace=NS
)
automl = own_service_fixture(
    create_automl,
    AutomlSettings,
    "shipyard_sec_yaml_am",
    namespace=NS,
    events_durable=f"sec-yaml-{uuid.uuid4().hex[:8]}",
)


async def timed(
    client: httpx.AsyncClient, method: str, url: str, warm_up: dict[str, Any], **kw: Any
) -> httpx.Response:
    """The request, asserted to be answered within 100 ms. The same request with the
    ``warm_up`` arguments goes first, so the time is not the connection's or a first
    request's imports (the multipart parser's) but the refusal's. The fastest of three
    attempts counts: the service shares this test's event loop with the suite's other
    in-process services, and one attempt can wait on them (a leader re-election's resync took
    834 ms once), but a parser that expanded the bomb would be slow on every attempt."""
    await client.request(method, url, **{**kw, **warm_up})
    times, answers = [], []
    for _ in range(3):
        start = time.perf_counter()
        answers.append(await client.request(method, url, **kw))
        times.append(time.perf_counter() - start)
    assert len({(r.status_code, r.text) for r in answers}) == 1, [r.text for r in answers]
    assert min(times) < 0.1, f"{method} {url} took {[round(t * 1000) for t in times]} ms"
    return answers[0]


def assert_alias_refusal(response: httpx.Response, message: str) -> None:
    assert response.status_code == 400, response.text
    assert message in response.text, response.text
    assert "YAML aliases would add more than 262144 nodes" in response.text, response.text


async def test_yaml_body_with_alias_bomb_refused(pipeline: InProcessService) -> None:
    async with httpx.AsyncClient(base_url=pipeline.url, headers=pipeline.headers()) as c:
        for plural, kind in (("workflowtemplates", "WorkflowTemplate"), ("workflows", "Workflow")):
            r = await timed(
                c,
                "POST",
                f"{ARGO}/{plural}",
                {"content": "kind: Nothing\n"},
                content=laughs(kind, "laughs"),
                headers={"content-type": "application/yaml"},
            )
            assert_alias_refusal(r, "the request body's YAML is refused: ")
            body = r.json()
            assert body["kind"] == "Status" and body["reason"] == "BadRequest", body
            listed = (await c.get(f"{ARGO}/{plural}")).json()
            assert listed["items"] == [], listed
        # PUT and PATCH read their bodies the same way.
        r = await timed(
            c,
            "PUT",
            f"{ARGO}/workflowtemplates/laughs",
            {"content": "kind: Nothing\n"},
            content=laughs("WorkflowTemplate", "laughs"),
            headers={"content-type": "application/yaml"},
        )
        assert_alias_refusal(r, "the request body's YAML is refused: ")


async def post_template_yaml(pipeline: InProcessService, text: str) -> httpx.Response:
    """POST a WorkflowTemplate as an ``application/yaml`` body."""
    async with httpx.AsyncClient(base_url=pipeline.url, headers=pipeline.headers()) as c:
        return await c.post(
            f"{ARGO}/workflowtemplates", content=text, headers={"content-type": "application/yaml"}
        )


async def test_yaml_body_with_few_aliases_accepted(pipeline: InProcessService) -> None:
    """Anchors that repeat a block (as hand-written Argo YAML does) still work."""
    text = (
        "kind: WorkflowTemplate\nmetadata: {name: anchors}\nspec:\n  templates:\n"
        "  - name: main\n    container: &c {image: python:3.11, command: [python, -c, pass]}\n"
        "  - name: again\n    container: *c\n"
    )
    r = await post_template_yaml(pipeline, text)
    assert r.status_code == 201, r.text
    templates = r.json()["spec"]["templates"]
    assert templates[0]["container"]["command"] == templates[1]["container"]["command"]


async def test_yaml_body_with_recursive_alias_refused(pipeline: InProcessService) -> None:
    """An alias to its own ancestor cannot be JSON: a 400, not a 500 in json.dumps."""
    text = "kind: WorkflowTemplate\nmetadata: {name: loop}\nspec: &s {templates: [*s]}\n"
    r = await post_template_yaml(pipeline, text)
    assert r.status_code == 400, r.text
    assert "the YAML has a recursive alias (near line 3)" in r.json()["message"], r.text


async def test_kfp_upload_with_alias_bomb_refused(pipeline: InProcessService) -> None:
    async with httpx.AsyncClient(base_url=pipeline.url, headers=pipeline.headers()) as c:
        r = await timed(
            c,
            "POST",
            "/apis/v2beta1/pipelines/upload",
            {"files": {"uploadfile": ("nothing.yaml", b"kind: Nothing\n")}},
            params={"namespace": NS, "display_name": "laughs"},
            files={"uploadfile": ("laughs.yaml", laughs("Workflow", "laughs").encode())},
        )
        assert_alias_refusal(r, "the pipeline package 'laughs.yaml' is refused: ")
        body = r.json()
        assert body["code"] == 3 and body["error"] == body["message"], body  # INVALID_ARGUMENT
        listed = (await c.get("/apis/v2beta1/pipelines", params={"namespace": NS})).json()
        assert listed.get("pipelines", []) == [], listed


async def test_configmap_trial_template_with_alias_bomb_refused(automl: InProcessService) -> None:
    """The ConfigMap itself is plain strings; its Job YAML is parsed when an Experiment
    names it, at admission, and the 422 names the field as Katib's webhook would."""
    job = "apiVersion: batch/v1\nkind: Job\n" + laughs("Workflow", "x").split("\n", 1)[1]
    config_map = {"metadata": {"name": "templates"}, "data": {"job.yaml": job}}
    experiment = {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": "laughs"},
        "spec": {
            "objective": {"type": "minimize", "objectiveMetricName": "loss"},
            "algorithm": {"algorithmName": "random"},
            "maxTrialCount": 1,
            "parallelTrialCount": 1,
            "parameters": [
                {"name": "x", "parameterType": "double", "feasibleSpace": {"min": "1", "max": "2"}}
            ],
            "trialTemplate": {
                "trialParameters": [{"name": "x", "reference": "x"}],
                "configMap": {"configMapName": "templates", "templatePath": "job.yaml"},
            },
        },
    }
    async with httpx.AsyncClient(base_url=automl.url, headers=automl.headers()) as c:
        assert (await c.post(CONFIGMAPS, json=config_map)).status_code == 201
        r = await timed(c, "POST", f"{KATIB}/experiments", {"json": {}}, json=experiment)
        assert r.status_code == 422, r.text
        causes = {x["field"]: x["message"] for x in r.json()["details"]["causes"]}
        assert "spec.trialTemplate.configMap.templatePath" in causes, r.text
        message = causes["spec.trialTemplate.configMap.templatePath"]
        assert message.startswith(f"'job.yaml' in ConfigMap {NS}/templates is refused: "), causes
        assert "YAML aliases would add more than 262144 nodes" in message, causes
        listed = (await c.get(f"{KATIB}/experiments")).json()
        assert listed["items"] == [], listed


def test_cli_apply_with_alias_bomb_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``shipyard apply -f`` refuses the file before sending anything (the client would
    otherwise expand it into a 3 MB request body)."""
    path = tmp_path / "laughs.yaml"
    path.write_text(laughs("Workflow", "laughs"))
    times = []
    for _ in range(3):  # the fastest of three, as in timed()
        start = time.perf_counter()
        with pytest.raises(yaml.YAMLError, match="YAML aliases would add more than 262144 nodes"):
            list(cli.read_documents(str(path)))
        times.append(time.perf_counter() - start)
    assert min(times) < 0.1, times

    class NoServer:  # apply must fail before it calls the platform
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"apply called the server ({name}) with an alias bomb")

    args = cli.argparse.Namespace(filename=[str(path)], namespace=NS)
    assert cli.cmd_apply(args, NoServer()) == 1  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot read {path}: YAML aliases would add more than"), err
