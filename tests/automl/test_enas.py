"""Katib's ENAS: settings and nasConfig validated as Katib does, the controller (valid
architectures, learning from rewards, the same suggestion after a restart), Katib's
``architecture``/``nn_config`` formats, and examples/automl/enas.yaml run end to end on the
whole platform (gateway and services as processes) with the ``kubernetes`` client."""

from __future__ import annotations

import copy
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.automl import enas, nas
from services.automl.algorithms import StudyRow, SuggestionEngine
from services.automl.validation import validate_experiment
from tests.automl.conftest import API, AutoML, assert_invalid
from tests.conftest import crash_service, start_service_again

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "automl" / "enas.yaml"
NAMESPACE = "kubeflow-user-example-com"
GROUP, VERSION = "kubeflow.org", "v1beta1"

# The example's operations expanded as Katib's SearchSpace does: every combination of the
# parameters' values, categorical values as strings, int values as numbers.
OPERATIONS = [
    {"opt_id": 0, "opt_type": "convolution", "opt_params": {"filter_size": "3"}},
    {"opt_id": 1, "opt_type": "convolution", "opt_params": {"filter_size": "5"}},
    {
        "opt_id": 2,
        "opt_type": "reduction",
        "opt_params": {"reduction_type": "max_pooling", "pool_size": 3},
    },
    {
        "opt_id": 3,
        "opt_type": "reduction",
        "opt_params": {"reduction_type": "max_pooling", "pool_size": 5},
    },
    {
        "opt_id": 4,
        "opt_type": "reduction",
        "opt_params": {"reduction_type": "avg_pooling", "pool_size": 3},
    },
    {
        "opt_id": 5,
        "opt_type": "reduction",
        "opt_params": {"reduction_type": "avg_pooling", "pool_size": 5},
    },
]


def enas_example(name: str) -> dict[str, Any]:
    obj = yaml.safe_load(EXAMPLE.read_text())
    obj["metadata"]["name"] = name
    return obj


def katib_parse(value: str) -> Any:
    """How Katib's ENAS trial (RunTrial.py) reads either argument."""
    return json.loads(value.replace("'", '"'))


def check_katib_shapes(architecture: Any, nn_config: Any) -> None:
    """What Katib's ModelConstructor reads: per layer l (from 1) the operation id at
    ``arch[l-1][0]``, its description at ``embedding[str(id)]`` and the skip bits
    ``arch[l-1][1:l+1]``; ``num_layers``, ``input_sizes``, ``output_sizes[-1]``."""
    assert nn_config["num_layers"] == 3 and len(architecture) == 3
    assert nn_config["input_sizes"] == [32] and nn_config["output_sizes"] == [2]
    used = set()
    for layer, entry in enumerate(architecture, start=1):
        assert len(entry) == layer, architecture
        assert all(bit in (0, 1) for bit in entry[1 : layer + 1]), architecture
        assert entry[0] in range(len(OPERATIONS)), architecture
        assert nn_config["embedding"][str(entry[0])] == OPERATIONS[entry[0]]
        used.add(str(entry[0]))
    assert set(nn_config["embedding"]) == used


def test_enas_example_inlines_the_trial_program() -> None:
    container = enas_example("x")["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]
    command = container["spec"]["containers"][0]["command"]
    assert command[:2] == ["python3", "-c"]
    assert command[2] == (ROOT / "examples" / "automl" / "enas_trial.py").read_text()


def test_enas_operations_expand_as_katib() -> None:
    assert nas.enas_operations(enas_example("x")["spec"]["nasConfig"]) == OPERATIONS
    double = {
        "operations": [
            {
                "operationType": "dropout",
                "parameters": [
                    {
                        "name": "rate",
                        "parameterType": "double",
                        "feasibleSpace": {"min": "0.1", "max": "0.3", "step": "0.1"},
                    }
                ],
            }
        ]
    }
    rates = [op["opt_params"]["rate"] for op in nas.enas_operations(double)]
    assert rates == pytest.approx([0.1, 0.2, 0.3])


def _categorical(name: str, *values: str) -> dict[str, Any]:
    return {"name": name, "parameterType": "categorical", "feasibleSpace": {"list": list(values)}}


def test_enas_suggests_for_katibs_cpu_example_search_space() -> None:
    """The search space of Katib's examples/v1beta1/nas/enas-cpu.yaml (one layer, four
    operation types): 106 operation ids, the first parameter varying slowest."""
    sizes, filters = ("3", "5", "7"), ("32", "48", "64", "96", "128")
    nas_config = {
        "graphConfig": {"numLayers": 1, "inputSizes": [32, 32, 3], "outputSizes": [10]},
        "operations": [
            {
                "operationType": "convolution",
                "parameters": [
                    _categorical("filter_size", *sizes),
                    _categorical("num_filter", *filters),
                    _categorical("stride", "1", "2"),
                ],
            },
            {
                "operationType": "separable_convolution",
                "parameters": [
                    _categorical("filter_size", *sizes),
                    _categorical("num_filter", *filters),
                    _categorical("stride", "1", "2"),
                    _categorical("depth_multiplier", "1", "2"),
                ],
            },
            {
                "operationType": "depthwise_convolution",
                "parameters": [
                    _categorical("filter_size", *sizes),
                    _categorical("stride", "1", "2"),
                    _categorical("depth_multiplier", "1", "2"),
                ],
            },
            {
                "operationType": "reduction",
                "parameters": [
                    _categorical("reduction_type", "max_pooling", "avg_pooling"),
                    {
                        "name": "pool_size",
                        "parameterType": "int",
                        "feasibleSpace": {"min": "2", "max": "3", "step": "1"},
                    },
                ],
            },
        ],
    }
    operations = nas.enas_operations(nas_config)
    assert len(operations) == 30 + 60 + 12 + 4
    assert operations[1] == {
        "opt_id": 1,
        "opt_type": "convolution",
        "opt_params": {"filter_size": "3", "num_filter": "32", "stride": "2"},
    }
    assert operations[-1] == {
        "opt_id": 105,
        "opt_type": "reduction",
        "opt_params": {"reduction_type": "avg_pooling", "pool_size": 3},
    }
    spec = _spec()
    spec["nasConfig"] = nas_config
    assert validate_experiment({"metadata": {"name": "enas-cpu"}, "spec": spec}) == []
    engine = SuggestionEngine()
    result = engine.suggest(spec, "uid-katib-cpu", [], {}, {}, {}, 3)
    for suggestion in result.new:
        architecture, nn_config = (katib_parse(a["value"]) for a in suggestion.assignments)
        assert len(architecture) == 1 and len(architecture[0]) == 1
        assert nn_config["input_sizes"] == [32, 32, 3] and nn_config["output_sizes"] == [10]
        op = architecture[0][0]
        assert nn_config["embedding"] == {str(op): operations[op]}


def test_enas_assignments_in_katib_format() -> None:
    """Katib's service: json.dumps of both, double quotes turned into single quotes,
    embedding keyed by operation id in the order the layers use them."""
    nas_config = enas_example("x")["spec"]["nasConfig"]
    assignments = nas.enas_assignments(nas_config, [5, 1, 1, 5, 0, 1])
    assert assignments == [
        {"name": "architecture", "value": "[[5], [1, 1], [5, 0, 1]]"},
        {
            "name": "nn_config",
            "value": "{'num_layers': 3, 'input_sizes': [32], 'output_sizes': [2], "
            "'embedding': {'5': {'opt_id': 5, 'opt_type': 'reduction', 'opt_params': "
            "{'reduction_type': 'avg_pooling', 'pool_size': 5}}, '1': {'opt_id': 1, "
            "'opt_type': 'convolution', 'opt_params': {'filter_size': '5'}}}}",
        },
    ]
    check_katib_shapes(katib_parse(assignments[0]["value"]), katib_parse(assignments[1]["value"]))


# ---------------------------------------------------------------- controller
def _spec(settings: dict[str, str] | None = None, objective: str = "maximize") -> dict[str, Any]:
    spec = enas_example("x")["spec"]
    spec["objective"]["type"] = objective
    if settings is not None:
        spec["algorithm"]["algorithmSettings"] = [
            {"name": k, "value": v} for k, v in settings.items()
        ]
    return spec


class Study:
    """A study as the service keeps it: rows, attributes and state round-tripped through
    JSON (as through Postgres) after every suggestion."""

    def __init__(self, spec: dict[str, Any], uid: str) -> None:
        self.spec, self.uid = spec, uid
        self.rows: list[StudyRow] = []
        self.attrs: dict[str, Any] = {}
        self.state: dict[str, Any] = {}

    def suggest(
        self, engine: SuggestionEngine, outcomes: dict[str, tuple[str, float | None]], count: int
    ) -> list[list[int]]:
        rows = [copy.deepcopy(r) for r in self.rows]
        result = engine.suggest(self.spec, self.uid, rows, outcomes, self.attrs, self.state, count)
        for s in result.new:
            s.row.trial_name = f"trial-{s.row.number}"
        self.rows = [copy.deepcopy(r) for r in rows] + [s.row for s in result.new]
        self.attrs = json.loads(json.dumps(result.study_attrs))
        self.state = json.loads(json.dumps(result.state))
        return [s.row.params["arc"] for s in result.new]


def test_controller_samples_valid_architectures_deterministically() -> None:
    import torch

    threads = torch.get_num_threads()
    spec = _spec()
    first = Study(spec, "uid-a").suggest(SuggestionEngine(), {}, 8)
    assert torch.get_num_threads() == threads  # one thread while it ran, then as before
    again = Study(spec, "uid-a").suggest(SuggestionEngine(), {}, 8)
    other = Study(spec, "uid-b").suggest(SuggestionEngine(), {}, 8)
    assert first == again
    assert first != other
    assert len({tuple(a) for a in first}) >= 2
    for arc in first:
        assignments = nas.enas_assignments(spec["nasConfig"], arc)
        check_katib_shapes(*(katib_parse(a["value"]) for a in assignments))


def _train(study: Study, engine: SuggestionEngine, reward: Any, rounds: int) -> list[list[int]]:
    arcs = study.suggest(engine, {}, 4)
    for _ in range(rounds):
        outcomes: dict[str, tuple[str, float | None]] = {
            row.trial_name: ("COMPLETE", reward(row.params["arc"]))
            for row in study.rows
            if row.state == "RUNNING"
        }
        arcs = study.suggest(engine, outcomes, 4)
    return arcs


@pytest.mark.parametrize("objective", ["maximize", "minimize"])
def test_controller_learns_the_rewarded_operation(objective: str) -> None:
    """A synthetic objective that counts the layers running operation 2: after some rounds
    the controller prefers it (it starts near uniform: 1/6 per operation)."""
    spec = _spec(
        {
            "controller_hidden_size": "16",
            "controller_learning_rate": "0.02",
            "controller_baseline_decay": "0.8",
            "controller_train_steps": "10",
        },
        objective,
    )
    sign = 1.0 if objective == "maximize" else -1.0
    study = Study(spec, "uid-learn")

    def reward(arc: list[int]) -> float:
        layers = enas.organize(arc, 3)
        return sign * sum(layer[0] == 2 for layer in layers) / 3

    settings = enas.parse_settings(spec["algorithm"]["algorithmSettings"])
    fresh = enas.Controller(3, 6, settings, 0).probabilities()
    assert max(fresh) < 0.2
    last = _train(study, SuggestionEngine(), reward, 12)
    controller = enas.Controller.load(study.attrs[enas.CONTROLLER_ATTR], 3, 6, settings, 0)
    learnt = controller.probabilities()
    assert learnt[2] == max(learnt) and learnt[2] > 0.5, learnt
    ops = [layer[0] for arc in last for layer in enas.organize(arc, 3)]
    assert ops.count(2) > len(ops) / 2, ops


def test_restarted_service_suggests_the_same() -> None:
    """Everything the controller learnt is in the stored study: a new engine (a restarted
    service) given the stored rows suggests exactly what the running one does."""
    spec = _spec({"controller_hidden_size": "16", "controller_learning_rate": "0.02"})
    study = Study(spec, "uid-restart")
    _train(study, SuggestionEngine(), lambda arc: float(arc[0] == 1), 3)
    outcomes: dict[str, tuple[str, float | None]] = {
        row.trial_name: ("COMPLETE", 0.5) for row in study.rows if row.state == "RUNNING"
    }
    running, restarted = copy.deepcopy(study), copy.deepcopy(study)
    engine = SuggestionEngine()
    engine.suggest(spec, "uid-restart", [], {}, {}, {}, 1)  # it has served before
    assert running.suggest(engine, outcomes, 2) == restarted.suggest(
        SuggestionEngine(), outcomes, 2
    )
    assert running.attrs == restarted.attrs
    assert running.attrs[enas.CONTROLLER_ATTR]["train_step"] == 4 * 50


# ---------------------------------------------------------------- validation
def _enas(change: Any) -> dict[str, Any]:
    obj = enas_example(f"bad-enas-{uuid.uuid4().hex[:6]}")
    change(obj["spec"])
    return obj


def _set(path: list[Any], value: Any) -> Any:
    def change(spec: dict[str, Any]) -> None:
        node = spec
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = copy.deepcopy(value)

    return change


def _setting(name: str, value: str) -> Any:
    return _set(["algorithm", "algorithmSettings"], [{"name": name, "value": value}])


REDUCTION = ["nasConfig", "operations", 1]


@pytest.mark.parametrize(
    ("change", "field", "text"),
    [
        (
            _setting("controller_lr", "0.1"),
            "spec.algorithm.algorithmSettings[0].name",
            "unknown setting 'controller_lr' for algorithm enas",
        ),
        (
            _setting("controller_hidden_size", "0"),
            "spec.algorithm.algorithmSettings[0].value",
            "controller_hidden_size: 0 must be in range [1, inf)",
        ),
        (
            _setting("controller_hidden_size", "1.5"),
            "spec.algorithm.algorithmSettings[0].value",
            "controller_hidden_size must be int type",
        ),
        (
            _setting("controller_hidden_size", "None"),
            "spec.algorithm.algorithmSettings[0].value",
            "controller_hidden_size must be int type",
        ),
        (
            _setting("controller_baseline_decay", "1.5"),
            "spec.algorithm.algorithmSettings[0].value",
            "controller_baseline_decay: 1.5 must be in range (0, 1]",
        ),
        (
            _setting("controller_learning_rate", "0"),
            "spec.algorithm.algorithmSettings[0].value",
            "controller_learning_rate: 0 must be in range (0, 1]",
        ),
        (
            _setting("controller_temperature", "hot"),
            "spec.algorithm.algorithmSettings[0].value",
            "controller_temperature must be float type",
        ),
        (
            _setting("controller_train_steps", "0"),
            "spec.algorithm.algorithmSettings[0].value",
            "controller_train_steps: 0 must be in range [1, inf)",
        ),
        (
            _set(["nasConfig", "graphConfig", "inputSizes"], []),
            "spec.nasConfig.graphConfig.inputSizes",
            "enas needs inputSizes",
        ),
        (
            _set(["nasConfig", "graphConfig", "outputSizes"], None),
            "spec.nasConfig.graphConfig.outputSizes",
            "enas needs outputSizes",
        ),
        (
            _set(["nasConfig", "graphConfig", "numLayers"], None),
            "spec.nasConfig.graphConfig.numLayers",
            "enas needs numLayers",
        ),
        (
            _set([*REDUCTION, "parameters"], []),
            "spec.nasConfig.operations[1].parameters",
            "enas needs the operation's parameters",
        ),
        (
            _set(
                [*REDUCTION, "parameters", 1],
                {"name": "p", "parameterType": "double", "feasibleSpace": {"min": "1", "max": "2"}},
            ),
            "spec.nasConfig.operations[1].parameters[1].feasibleSpace.step",
            "enas enumerates a double parameter by its step",
        ),
        (
            _set(
                [*REDUCTION, "parameters", 1, "feasibleSpace"],
                {"min": "1", "max": "5000", "step": "1"},
            ),
            "spec.nasConfig.operations",
            "expands to 10002 operations",
        ),
        (
            _set(["trialTemplate", "trialParameters", 0, "reference"], "search-space"),
            "spec.trialTemplate.trialParameters[0].reference",
            "'search-space' is neither a parameter name",
        ),
    ],
)
async def test_create_enas_experiment_invalid(
    automl: AutoML, change: Any, field: str, text: str
) -> None:
    r = await automl.request("POST", f"{API}/experiments", json=_enas(change))
    assert_invalid(r, field, text)


async def test_create_enas_experiment_takes_none_settings(automl: AutoML) -> None:
    """Katib lets the temperature, tanh constant, entropy and skip weights be "None"."""
    settings = [
        {"name": name, "value": "None"}
        for name in ("controller_temperature", "controller_tanh_const")
        + ("controller_entropy_weight", "controller_skip_weight")
    ]
    obj = _enas(_set(["algorithm", "algorithmSettings"], settings))
    obj["spec"].update(maxTrialCount=3, parallelTrialCount=1, maxFailedTrialCount=0)
    obj["spec"]["objective"].pop("goal")
    created = await automl.create("experiments", obj)
    assert created["spec"]["algorithm"]["algorithmSettings"] == settings
    assert created["spec"]["nasConfig"] == enas_example("x")["spec"]["nasConfig"]
    # One trial at a time: the controller trains (without those terms) before each next one.
    finished = await automl.wait_finished(obj["metadata"]["name"], timeout=60)
    assert finished["status"]["trialsSucceeded"] == 3, finished["status"]
    await automl.request("DELETE", f"{API}/experiments/{obj['metadata']['name']}")


# ---------------------------------------------------------------- end to end
def _wait_finished(api: Any, name: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        exp = api.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "experiments", name)
        done = [
            c["type"]
            for c in (exp.get("status") or {}).get("conditions", [])
            if c["status"] == "True" and c["type"] in ("Succeeded", "Failed")
        ]
        if done:
            assert done == ["Succeeded"], exp["status"]
            return dict(exp)
        assert time.monotonic() < deadline, exp
        time.sleep(0.2)


def _trials(api: Any, name: str) -> list[dict[str, Any]]:
    return list(
        api.list_namespaced_custom_object(
            GROUP,
            VERSION,
            NAMESPACE,
            "trials",
            label_selector=f"katib.kubeflow.org/experiment={name}",
        )["items"]
    )


def _example_experiment(api: Any, trials: int) -> str:
    name = f"enas-{uuid.uuid4().hex[:6]}"
    obj = enas_example(name)
    obj["spec"]["maxTrialCount"] = trials
    obj["spec"]["objective"].pop("goal")  # run every trial
    api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "experiments", obj)
    return name


def test_enas_example_runs_with_katib_parameters(platform: Any) -> None:
    from kubernetes import client as k8s

    api = k8s.CustomObjectsApi(k8s.ApiClient(k8s.Configuration(host=platform.gateway_url)))
    name = _example_experiment(api, 6)
    exp = _wait_finished(api, name)
    status = exp["status"]
    assert status["trials"] == status["trialsSucceeded"] == 6, status
    trials = _trials(api, name)
    assert len(trials) == 6
    architectures, accuracy = set(), {}
    for trial in trials:
        assignments = trial["spec"]["parameterAssignments"]
        assert [a["name"] for a in assignments] == ["architecture", "nn_config"]
        architecture, nn_config = (katib_parse(a["value"]) for a in assignments)
        check_katib_shapes(architecture, nn_config)
        architectures.add(json.dumps(architecture))
        command = trial["spec"]["runSpec"]["spec"]["template"]["spec"]["containers"][0]["command"]
        assert command[3:] == [
            f"--architecture={assignments[0]['value']}",
            f"--nn_config={assignments[1]['value']}",
        ]
        metrics = {m["name"]: m for m in trial["status"]["observation"]["metrics"]}
        accuracy[trial["metadata"]["name"]] = float(metrics["Validation-Accuracy"]["latest"])
        assert 0.0 < accuracy[trial["metadata"]["name"]] <= 1.0, metrics
    assert len(architectures) >= 2, architectures
    best = max(accuracy, key=lambda n: accuracy[n])
    optimal = status["currentOptimalTrial"]
    assert optimal["bestTrialName"] in [n for n, v in accuracy.items() if v == accuracy[best]]
    assert [a["name"] for a in optimal["parameterAssignments"]] == ["architecture", "nn_config"]
    suggestion = api.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "suggestions", name)
    assert suggestion["status"]["suggestionCount"] == 6
    api.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "experiments", name)


def test_enas_experiment_survives_a_service_crash(platform: Any) -> None:
    """SIGKILL the automl service once the controller has trained: the restarted service
    loads the controller stored with the study (from Postgres) and finishes the search."""
    from kubernetes import client as k8s

    api = k8s.CustomObjectsApi(k8s.ApiClient(k8s.Configuration(host=platform.gateway_url)))
    name = _example_experiment(api, 8)
    deadline = time.monotonic() + 60
    while len(_trials(api, name)) < 4:  # the third and fourth follow a training round
        assert time.monotonic() < deadline
        time.sleep(0.2)
    automl = crash_service(platform, "automl")
    time.sleep(1.0)  # trials finish while the service is down
    start_service_again(automl)
    exp = _wait_finished(api, name)
    assert exp["status"]["trialsSucceeded"] == 8, exp["status"]
    trials = _trials(api, name)
    assert len(trials) == 8
    for trial in trials:
        check_katib_shapes(
            *(katib_parse(a["value"]) for a in trial["spec"]["parameterAssignments"])
        )
    assert exp["status"]["currentOptimalTrial"]["bestTrialName"] in {
        t["metadata"]["name"] for t in trials
    }
    api.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "experiments", name)
