"""hera's WorkflowsService through the real gateway of the whole platform (single-user mode).

``WorkflowsService(host=<gateway>)`` unchanged: the gateway forwards ``/api/v1/workflows/{ns}``
to the pipeline service with a signed identity assertion. Nothing is faked.
"""

import asyncio
from typing import Any, cast

import pytest
from hera.workflows import DAG, Task, Workflow, WorkflowsService, script
from hera.workflows.models import (
    WorkflowCreateRequest,
    WorkflowResumeRequest,
    WorkflowRetryRequest,
    WorkflowStopRequest,
    WorkflowTerminateRequest,
)

from tests.pipeline.conftest import Gateway, nodes_by_display


@script()
def fan_out() -> None:
    import json

    print(json.dumps([{"n": 1}, {"n": 2}, {"n": 3}]))


@script()
def square(n: int) -> None:
    print(n * n)


@script()
def flip() -> None:
    print("tails")


@script()
def never() -> None:
    print("should not run")


async def test_hera_dag_with_param_fan_out_and_when(gateway: Gateway) -> None:
    namespace = gateway.namespace
    with Workflow(generate_name="hera-dag-", entrypoint="d", namespace=namespace) as w:
        with DAG(name="d"):
            # Under a DAG these calls return Tasks; hera's overloads say None or Step | Task.
            gen = cast(Task, fan_out())
            sq = cast(Task, square(with_param=gen.result, arguments={"n": "{{item.n}}"}))
            coin = cast(Task, flip())
            skip = cast(Task, never(when=f"{coin.result} == heads"))
            gen >> sq
            coin >> skip
    service = WorkflowsService(host=gateway.url, namespace=namespace)
    created = await asyncio.to_thread(
        service.create_workflow, WorkflowCreateRequest(workflow=w.build()), namespace
    )
    name = created.metadata.name
    assert name is not None
    done = await gateway.wait(namespace, name, timeout=60)
    assert done["status"]["phase"] == "Succeeded", [
        (n["displayName"], n["phase"], n.get("message")) for n in done["status"]["nodes"].values()
    ]
    fetched = await asyncio.to_thread(service.get_workflow, name, namespace)
    assert fetched.status is not None
    assert fetched.status.phase == "Succeeded"
    nodes = nodes_by_display(done)
    assert nodes["never"]["phase"] == "Skipped"
    squares = sorted(
        n["outputs"]["result"]
        for n in done["status"]["nodes"].values()
        if n["displayName"].startswith("square(")
    )
    assert squares == ["1", "4", "9"]
    listed = await asyncio.to_thread(service.list_workflows, namespace)
    assert listed.items is not None
    assert name in [i.metadata.name for i in listed.items]


async def test_hera_suspend_resume_stop_retry(gateway: Gateway) -> None:
    """The Argo Server actions (resume, terminate, retry, stop) as hera sends them."""
    namespace = gateway.namespace
    service = WorkflowsService(host=gateway.url, namespace=namespace)
    body: dict[str, Any] = {
        "metadata": {"generateName": "gate-"},
        "spec": {
            "entrypoint": "main",
            "templates": [
                {
                    "name": "main",
                    "steps": [
                        [{"name": "gate", "template": "gate"}],
                        [{"name": "after", "template": "ok"}],
                    ],
                },
                {"name": "gate", "suspend": {}},
                {"name": "ok", "container": {"image": "a", "command": ["true"]}},
            ],
        },
    }

    async def create() -> str:
        created = await asyncio.to_thread(
            service.create_workflow, WorkflowCreateRequest(workflow=body), namespace
        )
        assert created.metadata.name is not None
        return created.metadata.name

    name = await create()
    await gateway.wait(namespace, name, timeout=10, phases=("Running",))
    await asyncio.sleep(0.3)
    assert nodes_by_display(await gateway.get(namespace, name))["gate"]["phase"] == "Running"
    await asyncio.to_thread(service.resume_workflow, name, WorkflowResumeRequest(), namespace)
    done = await gateway.wait(namespace, name, timeout=20)
    assert done["status"]["phase"] == "Succeeded"
    assert nodes_by_display(done)["gate"]["phase"] == "Succeeded"

    body["spec"]["templates"][2]["container"]["command"] = ["sleep", "30"]
    body["spec"]["templates"][0]["steps"] = [[{"name": "after", "template": "ok"}]]
    name = await create()
    await gateway.wait(namespace, name, timeout=10, phases=("Running",))
    await asyncio.to_thread(service.terminate_workflow, name, WorkflowTerminateRequest(), namespace)
    done = await gateway.wait(namespace, name, timeout=20)
    assert done["status"]["phase"] == "Failed"
    retried = await asyncio.to_thread(
        service.retry_workflow, name, WorkflowRetryRequest(), namespace
    )
    assert retried.status is not None and retried.status.phase == "Running"  # at once, as Argo
    running = await gateway.wait(namespace, name, timeout=10, phases=("Running",))
    assert running["status"]["phase"] == "Running"
    await asyncio.to_thread(service.stop_workflow, name, WorkflowStopRequest(), namespace)
    stopped = await gateway.wait(namespace, name, timeout=20)
    assert stopped["status"]["phase"] == "Failed"
    assert "Stopped" in nodes_by_display(stopped)["after"]["message"]

    with pytest.raises(Exception, match="404"):
        await asyncio.to_thread(service.get_workflow, "does-not-exist", namespace)


async def test_hera_cron_workflows_and_workflow_templates(gateway: Gateway) -> None:
    """The Argo server's CronWorkflow and WorkflowTemplate routes as hera calls them: create,
    list, get, suspend and resume (a CronWorkflow), delete; then the object is gone."""
    from hera.exceptions import NotFound
    from hera.workflows import Container, CronWorkflow, WorkflowTemplate
    from hera.workflows.models import (
        CreateCronWorkflowRequest,
        CronWorkflowResumeRequest,
        CronWorkflowSuspendRequest,
        WorkflowTemplateCreateRequest,
    )

    namespace = gateway.namespace
    service = WorkflowsService(host=gateway.url, namespace=namespace)
    with CronWorkflow(
        name="hera-cron", schedules=["0 3 * * *"], entrypoint="c", namespace=namespace
    ) as cron:
        Container(name="c", image="alpine", command=["true"])
    request = CreateCronWorkflowRequest(cron_workflow=cron.build())
    created = await asyncio.to_thread(service.create_cron_workflow, request, namespace)
    assert created.metadata.name == "hera-cron" and created.spec.schedules == ["0 3 * * *"]
    listed = await asyncio.to_thread(service.list_cron_workflows, namespace)
    assert "hera-cron" in [c.metadata.name for c in listed.items or []]
    suspend = CronWorkflowSuspendRequest(name="hera-cron", namespace=namespace)
    suspended = await asyncio.to_thread(
        service.suspend_cron_workflow, "hera-cron", suspend, namespace
    )
    assert suspended.spec.suspend is True
    resume = CronWorkflowResumeRequest(name="hera-cron", namespace=namespace)
    await asyncio.to_thread(service.resume_cron_workflow, "hera-cron", resume, namespace)
    fetched = await asyncio.to_thread(service.get_cron_workflow, "hera-cron", namespace)
    assert fetched.spec.suspend is False and fetched.spec.workflow_spec.entrypoint == "c"
    await asyncio.to_thread(service.delete_cron_workflow, "hera-cron", namespace)
    with pytest.raises(NotFound):
        await asyncio.to_thread(service.get_cron_workflow, "hera-cron", namespace)

    with WorkflowTemplate(name="hera-template", entrypoint="c", namespace=namespace) as tmpl:
        Container(name="c", image="alpine", command=["true"])
    made = await asyncio.to_thread(
        service.create_workflow_template,
        WorkflowTemplateCreateRequest(template=tmpl.build()),
        namespace,
    )
    assert made.metadata.name == "hera-template"
    templates = await asyncio.to_thread(service.list_workflow_templates, namespace)
    assert "hera-template" in [t.metadata.name for t in templates.items or []]
    got = await asyncio.to_thread(service.get_workflow_template, "hera-template", namespace)
    assert got.spec.entrypoint == "c" and got.spec.templates is not None
    assert [t.name for t in got.spec.templates] == ["c"]
    await asyncio.to_thread(service.delete_workflow_template, "hera-template", namespace)
    with pytest.raises(NotFound):
        await asyncio.to_thread(service.get_workflow_template, "hera-template", namespace)
