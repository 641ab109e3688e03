"""KFP control flow compiled by kfp.compiler and run through kfp.Client via the real gateway:
``dsl.If``/``Elif``/``Else`` and ``dsl.Condition`` (``triggerPolicy.condition``), and
``dsl.ParallelFor`` over a literal list and over a pipeline parameter, with ``parallelism``
and ``dsl.Collected``."""

import asyncio
from pathlib import Path
from typing import Any

import kfp
from kfp import dsl

from tests.pipeline.conftest import Gateway, call, compile_to, unique


@dsl.component(base_image="python:3.11")
def flip(x: int) -> str:
    return "heads" if x > 0 else "tails" if x < 0 else "edge"


@dsl.component(base_image="python:3.11")
def say(msg: str) -> str:
    return msg


@dsl.component(base_image="python:3.11")
def square(n: int) -> int:
    return n * n


@dsl.component(base_image="python:3.11")
def total(nums: list) -> int:
    return sum(nums)


@dsl.pipeline(name="branches")
def branches(x: int = 1) -> None:
    side = flip(x=x).set_caching_options(False)
    with dsl.If(side.output == "heads"):
        say(msg="H")
    with dsl.Elif(side.output == "tails"):
        say(msg="T")
    with dsl.Else():
        say(msg="E")
    with dsl.Condition(x > 5):  # the deprecated spelling, on a pipeline parameter
        say(msg="big")


@dsl.pipeline(name="loops")
def loops(items: list = [1, 2, 3]) -> None:  # noqa: B006 - kfp reads the default
    with dsl.ParallelFor([4, 5]) as i:
        square(n=i).set_caching_options(False)
    with dsl.ParallelFor(items, parallelism=2) as j:
        squared = square(n=j).set_caching_options(False)
    total(nums=dsl.Collected(squared.output)).set_caching_options(False)


async def finished_workflow(client: kfp.Client, gateway: Gateway, run_id: str) -> dict[str, Any]:
    run = await call(client.wait_for_run_completion, run_id, 90, 0.2)
    async with gateway.client(gateway.namespace) as c:
        wf = (
            await c.get(
                f"/apis/argoproj.io/v1alpha1/namespaces/{gateway.namespace}/workflows/kfp-{run_id}"
            )
        ).json()
    assert run.state == "SUCCEEDED", [
        (n["displayName"], n["phase"], n.get("message")) for n in wf["status"]["nodes"].values()
    ]
    return wf


def pod_outputs(wf: dict[str, Any]) -> dict[str, list[str]]:
    """Output values of the Pod nodes that ran, by display name."""
    out: dict[str, list[str]] = {}
    for node in wf["status"]["nodes"].values():
        if node["type"] == "Pod" and node["phase"] == "Succeeded":
            params = (node.get("outputs") or {}).get("parameters") or []
            out.setdefault(node["displayName"].split("(")[0], []).extend(p["value"] for p in params)
    return out


async def test_kfp_if_elif_else_and_condition(
    gateway: Gateway, kfp_client: kfp.Client, tmp_path: Path
) -> None:
    package = compile_to(branches, tmp_path / "branches.yaml")
    exp = unique("branches")
    runs = {
        x: await call(
            kfp_client.create_run_from_pipeline_package,
            package,
            arguments={"x": x},
            experiment_name=exp,
        )
        for x in (1, -1, 9, 0)
    }
    done = dict(
        zip(
            runs,
            await asyncio.gather(
                *(finished_workflow(kfp_client, gateway, r.run_id) for r in runs.values())
            ),
            strict=True,
        )
    )
    said = {
        x: sorted(v for k, vs in pod_outputs(wf).items() if k.startswith("say") for v in vs)
        for x, wf in done.items()
    }
    assert said == {1: ["H"], -1: ["T"], 9: ["H", "big"], 0: ["E"]}
    skipped = [
        n["displayName"] for n in done[0]["status"]["nodes"].values() if n["phase"] == "Skipped"
    ]
    assert sorted(skipped) == ["condition-2", "condition-3", "condition-5"], skipped


async def test_kfp_parallel_for_static_and_parameter_collected(
    gateway: Gateway, kfp_client: kfp.Client, tmp_path: Path
) -> None:
    package = compile_to(loops, tmp_path / "loops.yaml")
    run = await call(
        kfp_client.create_run_from_pipeline_package,
        package,
        arguments={"items": [1, 2, 3, 4]},
        experiment_name=unique("loops"),
    )
    wf = await finished_workflow(kfp_client, gateway, run.run_id)
    outputs = pod_outputs(wf)
    assert sorted(outputs["square"], key=int) == ["16", "25"]  # over the literal [4, 5]
    assert sorted(outputs["square-2"], key=int) == ["1", "4", "9", "16"]  # over ``items``
    assert outputs["total"] == ["30"]
    loop = next(t for t in wf["spec"]["templates"] if t.get("parallelism"))
    assert loop["parallelism"] == 2
