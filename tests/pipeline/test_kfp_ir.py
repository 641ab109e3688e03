"""A kfp.compiler pipeline (IR YAML) run natively by the engine, without the KFP API."""

from pathlib import Path

from kfp import compiler, dsl
from kfp.dsl import Dataset, Input, Output

from services.pipeline.kfp_ir import compile_ir
from tests.pipeline.components import make
from tests.pipeline.conftest import PipelineService, nodes_by_display


@dsl.component(base_image="python:3.11")
def shout(text: str, out: Output[Dataset]) -> None:
    with open(out.path, "w") as f:
        f.write(text.upper())
    out.metadata["length"] = len(text)


@dsl.component(base_image="python:3.11")
def read(data: Input[Dataset]) -> str:
    return open(data.path).read() + f":{data.metadata['length']}"


@dsl.pipeline(name="three-steps")
def three_steps(n: int = 2, word: str = "ab") -> None:
    made = make(n=n, word=word)
    shouted = shout(text=made.output)
    read(data=shouted.outputs["out"]).set_retry(num_retries=1)


def compiled(tmp_path: Path) -> dict:
    import yaml

    path = tmp_path / "p.yaml"
    compiler.Compiler().compile(three_steps, str(path))
    return yaml.safe_load(path.read_text())


async def test_run_kfp_ir_passes_parameters_and_artifacts(
    pipeline: PipelineService, namespace: str, tmp_path: Path
) -> None:
    spec = compile_ir(compiled(tmp_path), {"n": 3, "word": "xy"})
    wf = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"generateName": "ir-"},
        "spec": spec,
    }
    done = await pipeline.run(namespace, wf, timeout=60)
    assert done["status"]["phase"] == "Succeeded", [
        (n["displayName"], n["phase"], n.get("message")) for n in done["status"]["nodes"].values()
    ]
    nodes = nodes_by_display(done)
    assert nodes["make"]["outputs"]["parameters"] == [{"name": "Output", "value": "xyxyxy"}]
    read_node = next(
        n
        for n in done["status"]["nodes"].values()
        if n["displayName"].startswith("read(") and n["type"] == "Pod"
    )
    assert read_node["outputs"]["parameters"] == [{"name": "Output", "value": "XYXYXY:6"}]


def test_compile_ir_refuses_what_cannot_run_with_field_paths(tmp_path: Path) -> None:
    """Resolver executors, artifact loops, expression selectors and CEL beyond comparisons of
    inputs are refused with the IR field that uses them, never dropped."""
    import pytest

    from services.common.errors import ApiError

    ir = compiled(tmp_path)
    tasks = ir["root"]["dag"]["tasks"]
    tasks["read"]["artifactIterator"] = {"items": {"inputArtifact": "x"}, "itemInput": "y"}
    tasks["shout"]["inputs"]["parameters"]["text"]["parameterExpressionSelector"] = "x"
    tasks["shout"]["triggerPolicy"] = {"condition": "size(inputs.parameter_values['text']) > 1"}
    ir["deploymentSpec"]["executors"]["exec-make"] = {"resolver": {}}
    with pytest.raises(ApiError) as err:
        compile_ir(ir)
    fields = sorted(c.field for c in err.value.causes)
    assert fields == [
        "pipeline_spec.deploymentSpec.executors.exec-make",
        "pipeline_spec.root.dag.tasks.read.artifactIterator",
        "pipeline_spec.root.dag.tasks.shout.inputs.parameters.text.parameterExpressionSelector",
        "pipeline_spec.root.dag.tasks.shout.triggerPolicy.condition",
    ], fields


def test_condition_to_when_quotes_operands() -> None:
    from services.pipeline.expressions import evaluate_when
    from services.pipeline.kfp_ir import condition_to_when

    cel = "!(int(inputs.parameter_values['n']) > 2) && inputs.parameter_values['w'] == 'heads'"
    when = condition_to_when(cel, {"n": "{{tasks.a.outputs.parameters.n}}", "w": "{{item}}"})
    assert when == ("!('{{tasks.a.outputs.parameters.n}}' > 2) && '{{item}}' == 'heads'")
    assert (
        evaluate_when(
            when.replace("{{tasks.a.outputs.parameters.n}}", "2").replace("{{item}}", "heads")
        )
        is True
    )
    assert (
        evaluate_when(
            when.replace("{{tasks.a.outputs.parameters.n}}", "10").replace("{{item}}", "heads")
        )
        is False
    )
