"""Argo Workflow features on the real engine, the local runtime and real step processes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from tests import specs
from tests.pipeline.conftest import WF_PATH, PipelineService, nodes_by_display


def wf(
    name: str, templates: list[dict[str, Any]], entrypoint: str = "main", **spec: Any
) -> dict[str, Any]:
    return specs.workflow(f"{name}-", templates, generate_name=True, entrypoint=entrypoint, **spec)


def dag_main(*tasks: dict[str, Any]) -> dict[str, Any]:
    """The ``main`` template: a DAG of ``tasks``."""
    return {"name": "main", "dag": {"tasks": list(tasks)}}


def sh(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "container": {"image": "alpine", "command": ["sh", "-c", script]},
        **extra,
    }


def py(name: str, source: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "script": {"image": "python:3.12", "command": ["python3"], "source": source},
        **extra,
    }


def two_steps(name: str, make: str, out: dict[str, Any], use: str, inp: dict[str, Any]) -> Any:
    """make -> use, the output artifact ``out`` of make passed as ``in`` of use."""
    return wf(
        name,
        [
            dag_main(
                {"name": "make", "template": "make"},
                {
                    "name": "use",
                    "template": "use",
                    "dependencies": ["make"],
                    "arguments": {
                        "artifacts": [
                            {"name": "in", "from": "{{tasks.make.outputs.artifacts.out}}"}
                        ]
                    },
                },
            ),
            sh("make", make, outputs={"artifacts": [{"name": "out", **out}]}),
            py("use", use, inputs={"artifacts": [{"name": "in", **inp}]}),
        ],
    )


async def test_run_steps_with_script_result_and_parameters(
    pipeline: PipelineService, namespace: str
) -> None:
    spec = wf(
        "steps",
        [
            {
                "name": "main",
                "inputs": {"parameters": [{"name": "who", "default": "nobody"}]},
                "steps": [
                    [{"name": "flip", "template": "flip"}],
                    [
                        {
                            "name": "heads",
                            "template": "say",
                            "when": "{{steps.flip.outputs.result}} == heads",
                            "arguments": {
                                "parameters": [
                                    {"name": "msg", "value": "H {{inputs.parameters.who}}"}
                                ]
                            },
                        },
                        {
                            "name": "tails",
                            "template": "say",
                            "when": "{{steps.flip.outputs.result}} == tails",
                            "arguments": {"parameters": [{"name": "msg", "value": "T"}]},
                        },
                    ],
                ],
            },
            py("flip", "print('heads')"),
            sh(
                "say",
                "echo {{inputs.parameters.msg}} > /tmp/out.txt",
                inputs={"parameters": [{"name": "msg"}]},
                outputs={"parameters": [{"name": "said", "valueFrom": {"path": "/tmp/out.txt"}}]},
            ),
        ],
        arguments={"parameters": [{"name": "who", "value": "alice"}]},
    )
    spec["spec"]["templates"][0]["inputs"]["parameters"][0].pop("default")
    spec["spec"]["arguments"] = {"parameters": [{"name": "who", "value": "alice"}]}
    done = await pipeline.run_succeeded(namespace, spec)
    nodes = nodes_by_display(done)
    assert nodes["flip"]["outputs"]["result"] == "heads"
    assert nodes["heads"]["phase"] == "Succeeded"
    assert nodes["heads"]["outputs"]["parameters"] == [{"name": "said", "value": "H alice"}]
    assert nodes["tails"]["phase"] == "Skipped" and nodes["tails"]["type"] == "Skipped"
    assert nodes["[0]"]["type"] == "StepGroup"
    assert nodes[done["metadata"]["name"]]["type"] == "Steps"


async def test_run_dag_loops_fan_out_and_aggregate(
    pipeline: PipelineService, namespace: str
) -> None:
    spec = wf(
        "loops",
        [
            dag_main(
                {"name": "gen", "template": "gen"},
                {
                    "name": "each",
                    "template": "echo",
                    "depends": "gen",
                    "arguments": {"parameters": [{"name": "x", "value": "{{item.n}}"}]},
                    "withParam": "{{tasks.gen.outputs.result}}",
                },
                {
                    "name": "items",
                    "template": "echo",
                    "withItems": ["a", "b"],
                    "arguments": {"parameters": [{"name": "x", "value": "{{item}}"}]},
                },
                {
                    "name": "seq",
                    "template": "echo",
                    "withSequence": {"count": "3", "start": "5"},
                    "arguments": {"parameters": [{"name": "x", "value": "{{item}}"}]},
                },
                {
                    "name": "sum",
                    "template": "echo",
                    "depends": "each && seq",
                    "arguments": {
                        "parameters": [
                            {"name": "x", "value": "{{tasks.each.outputs.parameters.v}}"}
                        ]
                    },
                },
            ),
            py("gen", "import json; print(json.dumps([{'n': i} for i in range(4)]))"),
            sh(
                "echo",
                "printf '%s' '{{inputs.parameters.x}}' > /tmp/v",
                inputs={"parameters": [{"name": "x"}]},
                outputs={"parameters": [{"name": "v", "valueFrom": {"path": "/tmp/v"}}]},
            ),
        ],
        parallelism=3,
    )
    done = await pipeline.run_succeeded(namespace, spec)
    nodes = done["status"]["nodes"].values()
    each = [n for n in nodes if n["displayName"].startswith("each(")]
    assert len(each) == 4
    seq = sorted(
        n["inputs"]["parameters"][0]["value"] for n in nodes if n["displayName"].startswith("seq(")
    )
    assert seq == ["5", "6", "7"]
    summed = nodes_by_display(done)["sum"]
    assert json.loads(summed["outputs"]["parameters"][0]["value"]) == ["0", "1", "2", "3"]
    assert nodes_by_display(done)["each"]["type"] == "TaskGroup"


async def test_run_depends_failure_branches(pipeline: PipelineService, namespace: str) -> None:
    spec = wf(
        "depends",
        [
            dag_main(
                {"name": "bad", "template": "fail"},
                {"name": "on-fail", "template": "ok", "depends": "bad.Failed"},
                {"name": "on-ok", "template": "ok", "depends": "bad.Succeeded"},
            ),
            sh("fail", "exit 3"),
            sh("ok", "true"),
        ],
    )
    done = await pipeline.run(namespace, spec)
    nodes = nodes_by_display(done)
    assert nodes["bad"]["phase"] == "Failed"
    assert nodes["bad"]["outputs"]["exitCode"] == "3"
    assert nodes["on-fail"]["phase"] == "Succeeded"
    assert nodes["on-ok"]["phase"] == "Omitted"
    assert done["status"]["phase"] == "Succeeded", done["status"]


async def test_run_retry_strategy_then_exit_handler(
    pipeline: PipelineService, namespace: str
) -> None:
    """The flaky step fails twice (a counter file on a claim), then succeeds on attempt 3."""
    await pipeline.runtime.create_volume(namespace, "counter")
    spec = wf(
        "retry",
        [
            {"name": "main", "dag": {"tasks": [{"name": "flaky", "template": "flaky"}]}},
            {
                "name": "flaky",
                "retryStrategy": {
                    "limit": "3",
                    "retryPolicy": "OnFailure",
                    "backoff": {"duration": "0.2", "factor": 1},
                },
                "container": {
                    "image": "alpine",
                    "command": ["sh", "-c", "echo x >> /data/n; test $(wc -l < /data/n) -ge 3"],
                    "volumeMounts": [{"name": "d", "mountPath": "/data"}],
                },
                "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "counter"}}],
            },
            sh("exit", "echo status={{workflow.status}}"),
        ],
        onExit="exit",
    )
    done = await pipeline.run_succeeded(namespace, spec)
    nodes = nodes_by_display(done)
    assert nodes["flaky"]["type"] == "Retry"
    attempts = [
        n for n in done["status"]["nodes"].values() if n["displayName"].startswith("flaky(")
    ]
    assert sorted(n["phase"] for n in attempts) == ["Failed", "Failed", "Succeeded"]
    exit_node = nodes[f"{done['metadata']['name']}.onExit"]
    assert exit_node["phase"] == "Succeeded"
    async with pipeline.client(namespace) as c:
        r = await c.get(
            f"{WF_PATH.format(ns=namespace)}/{done['metadata']['name']}/log",
            params={"step": exit_node["displayName"]},
        )
    assert r.text.strip() == "status=Succeeded"


async def test_run_retry_limit_exhausted_fails(pipeline: PipelineService, namespace: str) -> None:
    spec = wf("retryfail", [sh("main", "exit 1", retryStrategy={"limit": 1})])
    done = await pipeline.run(namespace, spec)
    assert done["status"]["phase"] == "Failed"
    root = done["status"]["nodes"][done["metadata"]["name"]]
    assert root["type"] == "Retry" and "No more retries left" in root["message"]
    assert len(root["children"]) == 2


async def test_run_deadline_exceeded(pipeline: PipelineService, namespace: str) -> None:
    spec = wf(
        "deadline",
        [
            {"name": "main", "steps": [[{"name": "slow", "template": "slow"}]]},
            sh("slow", "sleep 30", activeDeadlineSeconds=1),
        ],
    )
    done = await pipeline.run(namespace, spec, timeout=20)
    assert done["status"]["phase"] == "Failed"
    assert "deadline" in nodes_by_display(done)["slow"]["message"]
    spec = wf("wfdeadline", [sh("main", "sleep 30")], activeDeadlineSeconds=1)
    done = await pipeline.run(namespace, spec, timeout=20)
    assert done["status"]["phase"] == "Failed"
    assert "deadline" in done["status"]["message"]


async def test_run_artifacts_between_steps(pipeline: PipelineService, namespace: str) -> None:
    spec = two_steps(
        "arts",
        "mkdir -p /tmp/o && echo artifact-data > /tmp/o/f.txt",
        {"path": "/tmp/o/f.txt"},
        "print(open('/in/f.txt').read().strip().upper())",
        {"path": "/in/f.txt"},
    )
    done = await pipeline.run_succeeded(namespace, spec)
    assert nodes_by_display(done)["use"]["outputs"]["result"] == "ARTIFACT-DATA"


async def test_run_memoized_step_is_cached(pipeline: PipelineService, namespace: str) -> None:
    def spec(cache: str | None = None) -> dict[str, Any]:
        body = wf(
            "memo",
            [
                py(
                    "main",
                    "import time; print(time.time_ns())",
                    memoize={"key": "stamp-v1", "maxAge": "1h"},
                )
            ],
        )
        if cache:
            body["metadata"]["annotations"] = {"pipeline.shipyard.io/cache": cache}
        return body

    first = await pipeline.run(namespace, spec())
    second = await pipeline.run(namespace, spec())
    off = await pipeline.run(namespace, spec("false"))
    r1, r2, r3 = (x["status"]["nodes"][x["metadata"]["name"]] for x in (first, second, off))
    assert r1["memoizationStatus"]["hit"] is False
    assert r2["memoizationStatus"]["hit"] is True
    assert r2["outputs"]["result"] == r1["outputs"]["result"]
    assert "memoizationStatus" not in r3 and r3["outputs"]["result"] != r1["outputs"]["result"]


async def test_run_suspend_with_duration(pipeline: PipelineService, namespace: str) -> None:
    spec = wf(
        "suspend",
        [
            {
                "name": "main",
                "steps": [
                    [{"name": "wait", "template": "wait"}],
                    [{"name": "after", "template": "ok"}],
                ],
            },
            {"name": "wait", "suspend": {"duration": "1"}},
            sh("ok", "true"),
        ],
    )
    done = await pipeline.run(namespace, spec, timeout=20)
    assert done["status"]["phase"] == "Succeeded"
    assert nodes_by_display(done)["wait"]["type"] == "Suspend"


async def test_run_workflow_template_refs(pipeline: PipelineService, namespace: str) -> None:
    template = specs.workflow(
        "shared",
        [
            sh(
                "hello",
                "echo {{inputs.parameters.msg}}",
                inputs={"parameters": [{"name": "msg"}]},
            ),
            {
                "name": "twice",
                "dag": {
                    "tasks": [
                        {
                            "name": "a",
                            "template": "hello",
                            "arguments": {"parameters": [{"name": "msg", "value": "a"}]},
                        }
                    ]
                },
            },
        ],
        kind="WorkflowTemplate",
        entrypoint="hello",
        arguments={"parameters": [{"name": "msg", "value": "from-template"}]},
    )
    async with pipeline.client(namespace) as c:
        r = await c.post(
            f"/apis/argoproj.io/v1alpha1/namespaces/{namespace}/workflowtemplates", json=template
        )
        assert r.status_code == 201, r.text
    by_ref = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"generateName": "byref-"},
        "spec": {"workflowTemplateRef": {"name": "shared"}},
    }
    done = await pipeline.run_succeeded(namespace, by_ref)
    assert done["status"]["nodes"][done["metadata"]["name"]]["inputs"]["parameters"] == [
        {"name": "msg", "value": "from-template"}
    ]
    tref = wf(
        "tref",
        [
            {
                "name": "main",
                "dag": {
                    "tasks": [{"name": "x", "templateRef": {"name": "shared", "template": "twice"}}]
                },
            }
        ],
    )
    done = await pipeline.run_succeeded(namespace, tref)
    assert "a" in nodes_by_display(done)


async def test_run_volume_claim_templates(pipeline: PipelineService, namespace: str) -> None:
    spec = wf(
        "vct",
        [
            {
                "name": "main",
                "steps": [[{"name": "w", "template": "w"}], [{"name": "r", "template": "r"}]],
            },
            {
                "name": "w",
                "container": {
                    "image": "a",
                    "command": ["sh", "-c", "echo hi > /w/f"],
                    "volumeMounts": [{"name": "work", "mountPath": "/w"}],
                },
            },
            {
                "name": "r",
                "container": {
                    "image": "a",
                    "command": ["cat", "/w/f"],
                    "volumeMounts": [{"name": "work", "mountPath": "/w"}],
                },
            },
        ],
        volumeClaimTemplates=[
            {
                "metadata": {"name": "work"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Mi"}},
                },
            }
        ],
    )
    done = await pipeline.run_succeeded(namespace, spec)
    claim = done["status"]["persistentVolumeClaims"][0]["persistentVolumeClaim"]["claimName"]
    for _ in range(50):
        if not [v for v in await pipeline.runtime.list_volumes(namespace) if v.name == claim]:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the claim template's volume was not released")


async def test_create_workflow_bad_specs_rejected(
    pipeline: PipelineService, namespace: str
) -> None:
    cases = {
        "cycle": (
            wf(
                "c",
                [
                    dag_main(
                        {"name": "a", "template": "t", "dependencies": ["b"]},
                        {"name": "b", "template": "t", "dependencies": ["a"]},
                    ),
                    sh("t", "true"),
                ],
            ),
            "spec.templates[0].dag.tasks",
            "cycle",
        ),
        "unknown template": (
            wf("u", [{"name": "main", "dag": {"tasks": [{"name": "a", "template": "nope"}]}}]),
            "spec.templates[0].dag.tasks[0].template",
            "nope",
        ),
        "missing parameter": (
            wf(
                "m",
                [
                    {"name": "main", "dag": {"tasks": [{"name": "a", "template": "t"}]}},
                    sh("t", "echo {{inputs.parameters.x}}", inputs={"parameters": [{"name": "x"}]}),
                ],
            ),
            "spec.templates[0].dag.tasks[0].arguments.parameters",
            "'x'",
        ),
        "unsupported field": (
            wf("r", [{"name": "main", "resource": {"action": "create"}}]),
            "spec.templates[0].resource",
            "",
        ),
        "bad when": (
            wf(
                "w",
                [
                    {
                        "name": "main",
                        "steps": [[{"name": "a", "template": "t", "when": "(1 == 1"}]],
                    },
                    sh("t", "true"),
                ],
            ),
            "spec.templates[0].steps[0][0].when",
            "",
        ),
    }
    async with pipeline.client(namespace) as c:
        for label, (body, field, text) in cases.items():
            # Strict, as kubectl and the shipyard CLI ask: an unsupported field is an error
            # (the server's default, Warn, drops it as Kubernetes does).
            params = {"fieldValidation": "Strict"}
            r = await c.post(WF_PATH.format(ns=namespace), json=body, params=params)
            assert r.status_code == 422, (label, r.text)
            causes = r.json()["details"]["causes"]
            assert any(cause["field"] == field and text in cause["message"] for cause in causes), (
                label,
                causes,
            )


async def test_read_workflow_log_all_steps_prefixed(
    pipeline: PipelineService, namespace: str
) -> None:
    spec = wf(
        "logs",
        [
            {
                "name": "main",
                "steps": [[{"name": "one", "template": "t"}], [{"name": "two", "template": "t"}]],
            },
            sh("t", "echo line"),
        ],
    )
    done = await pipeline.run(namespace, spec)
    async with httpx.AsyncClient(base_url=pipeline.url, headers=pipeline.headers(namespace)) as c:
        r = await c.get(f"{WF_PATH.format(ns=namespace)}/{done['metadata']['name']}/log")
    assert r.text.splitlines() == ["one: line", "two: line"]


async def test_read_workflow_logs_argo_api(pipeline: PipelineService, namespace: str) -> None:
    """Argo's log endpoint: one JSON entry per line naming the pod's node; an unknown
    ``podName`` is a 404 that names it."""
    spec = wf(
        "argologs",
        [{"name": "main", "steps": [[{"name": "one", "template": "t"}]]}, sh("t", "echo line")],
    )
    done = await pipeline.run(namespace, spec)
    name = done["metadata"]["name"]
    pod = next(n for n in done["status"]["nodes"].values() if n["type"] == "Pod")
    log = f"/api/v1/workflows/{namespace}/{name}/log"
    async with httpx.AsyncClient(base_url=pipeline.url, headers=pipeline.headers(namespace)) as c:
        r = await c.get(log, params={"podName": pod["id"]})
        missing = await c.get(log, params={"podName": "nope"})
    assert [json.loads(line) for line in r.text.splitlines()] == [
        {"result": {"content": "line", "podName": pod["id"]}}
    ]
    assert missing.status_code == 404, missing.text
    assert f'pod "nope" not found in workflow "{name}"' in missing.json()["message"]


async def test_run_parallelism_limits_concurrent_steps(
    pipeline: PipelineService, namespace: str
) -> None:
    """Four 0.4 s steps under parallelism 2: the runtime's own timestamps never overlap 3."""
    from services.pipeline.runner import workload_name

    spec = wf(
        "par",
        [
            {
                "name": "main",
                "parallelism": 2,
                "dag": {"tasks": [{"name": f"t{i}", "template": "nap"} for i in range(4)]},
            },
            sh("nap", "sleep 0.4"),
        ],
    )
    done = await pipeline.run(namespace, spec)
    assert done["status"]["phase"] == "Succeeded"
    spans = []
    for node in done["status"]["nodes"].values():
        if node["type"] == "Pod":
            st = await pipeline.runtime.status(namespace, workload_name(done, node))
            spans.append((st.start_time, st.finish_time))
    assert len(spans) == 4
    most = max(sum(1 for s, f in spans if s <= start < f) for start, _ in spans)
    assert most <= 2


async def test_run_dag_timeout_stops_children(pipeline: PipelineService, namespace: str) -> None:
    spec = wf(
        "dagtimeout",
        [
            {
                "name": "main",
                "timeout": "1s",
                "dag": {"tasks": [{"name": "slow", "template": "slow"}]},
            },
            sh("slow", "sleep 30"),
        ],
    )
    done = await pipeline.run(namespace, spec, timeout=20)
    assert done["status"]["phase"] == "Failed"
    assert nodes_by_display(done)["slow"]["message"] == "Step exceeded its deadline"
