"""Tenant regexes run in linear time (issue 10, item 5).

A Katib metrics collector's ``metricsFormat`` is the tenant's regex, applied by the automl
service to every line its trials print. With a backtracking engine, ``((a|aa)+)+$`` over a
line of a's ending in ``b`` takes seconds per line (minutes at thirty a's), on the service's
event loop, so every other experiment stopped with it. On RE2 the line takes microseconds,
and patterns RE2 cannot run (backreferences, lookaround) are refused at validation with a
422 naming the field. Argo ``when`` expressions (``=~``) share the engine.

A real automl service (uvicorn in this loop) on its own database; trials are real sandboxed
processes of the local runtime, as in tests/automl.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from services.automl.app import create_app
from services.automl.settings import Settings
from services.pipeline.expressions import ExpressionError, evaluate_when
from tests.automl.conftest import API, NAMESPACE, AutoML, python_experiment, unique
from tests.conftest import fresh_database, service_in_process

PARAM = [{"name": "x", "parameterType": "double", "feasibleSpace": {"min": "1", "max": "2"}}]
CATASTROPHIC = r"((a|aa)+)+$"
# Two lines a backtracking engine spends seconds on each (2.3x more per extra "a").
EXPLODING_OUTPUT = "print('a' * 18 + 'b'); print('a' * 18 + 'b')"
FORMAT_FIELD = "spec.metricsCollectorSpec.source.filter.metricsFormat"


@pytest.fixture(scope="module")
def regex_db() -> Iterator[str]:
    with fresh_database("shipyard_sec_regex") as url:
        yield url


@pytest.fixture(scope="module")
async def automl(
    regex_db: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[AutoML]:
    async with service_in_process(
        create_app,
        Settings,
        database_url=regex_db,
        nats_url=nats_url,
        state_dir=Path(tmp_path_factory.mktemp("sec-regex")),
        namespace=NAMESPACE,
        resync_seconds=5,
        events_durable=f"sec-regex-{uuid.uuid4().hex[:8]}",
    ) as service:
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
            yield AutoML(service.url, service.minter, client, service.app, service.state_dir)


def causes_of(r: httpx.Response) -> dict[str, str]:
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["kind"] == "Status" and body["reason"] == "Invalid", body
    return {c["field"]: c["message"] for c in body["details"]["causes"]}


async def test_metrics_format_re2_cannot_run_refused(automl: AutoML) -> None:
    """Backreferences and lookaround compile in Python's ``re``, never in RE2 (nor in Go,
    where Katib's collector runs them): a 422 naming each entry, before any trial runs."""
    name = unique("backref")
    formats = [r"(\w+)=(\d+)\1", r"(?=loss)(\w+)=(\d+)", r"(\w+)\s*=\s*(\d+)"]
    body = python_experiment(
        name,
        "print('loss=1')",
        parameters=PARAM,
        maxTrialCount=1,
        parallelTrialCount=1,
        metricsCollectorSpec={"source": {"filter": {"metricsFormat": formats}}},
    )
    causes = causes_of(await automl.request("POST", f"{API}/experiments", json=body))
    assert causes == {
        f"{FORMAT_FIELD}[0]": "invalid regular expression: invalid escape sequence: \\1 "
        "(patterns use RE2 syntax: no backreferences or lookaround)",
        f"{FORMAT_FIELD}[1]": "invalid regular expression: invalid perl operator: (?= "
        "(patterns use RE2 syntax: no backreferences or lookaround)",
    }
    missing = await automl.request("GET", f"{API}/experiments/{name}")
    assert missing.status_code == 404, missing.text


async def test_trial_metrics_format_re2_cannot_run_refused(automl: AutoML) -> None:
    """A Trial created directly carries its own collector spec: checked the same way."""
    trial = {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Trial",
        "metadata": {"name": unique("trial")},
        "spec": {
            "objective": {"type": "minimize", "objectiveMetricName": "loss"},
            "metricsCollector": {"source": {"filter": {"metricsFormat": [r"(a)(b)\2"]}}},
        },
    }
    causes = causes_of(await automl.request("POST", f"{API}/trials", json=trial))
    assert causes == {
        "spec.metricsCollector.source.filter.metricsFormat[0]": "invalid regular expression: "
        "invalid escape sequence: \\2 (patterns use RE2 syntax: no backreferences or lookaround)"
    }


async def test_catastrophic_metric_regex_does_not_delay_other_experiments(
    automl: AutoML,
) -> None:
    """The acceptance test of issue 10: while an experiment's collector applies
    ``((a|aa)+)+$`` to lines that make a backtracking engine explode, another experiment
    keeps progressing: its reads never wait 1 s, and it finishes."""
    bomb, other = unique("bomb"), unique("other")
    await automl.create(
        "experiments",
        python_experiment(
            bomb,
            EXPLODING_OUTPUT,
            parameters=PARAM,
            maxTrialCount=1,
            parallelTrialCount=1,
            metricsCollectorSpec={"source": {"filter": {"metricsFormat": [CATASTROPHIC]}}},
        ),
    )
    await automl.create(
        "experiments",
        python_experiment(
            other,
            "import time; time.sleep(0.3); print('loss=0.5')",
            parameters=PARAM,
            maxTrialCount=3,
            parallelTrialCount=1,
        ),
    )
    finished: dict[str, dict] = {}
    longest_wait = 0.0
    last = time.monotonic()
    async with asyncio.timeout(120):
        while len(finished) < 2:
            for name in (bomb, other):
                exp = await automl.get("experiments", name)
                now = time.monotonic()
                longest_wait, last = max(longest_wait, now - last), now
                done = [
                    c["type"]
                    for c in exp.get("status", {}).get("conditions", [])
                    if c["status"] == "True" and c["type"] in ("Succeeded", "Failed")
                ]
                if done:
                    finished[name] = exp
            await asyncio.sleep(0.1)
    assert longest_wait < 1.0, f"the service stalled for {longest_wait:.2f} s"
    other_trials = [t["status"] for t in await automl.trials(other)]
    assert finished[other]["status"].get("trialsSucceeded") == 3, json.dumps(other_trials)
    # The bomb's own trial ran to the end; its regex found no number (the a's are no
    # metric), so it is MetricsUnavailable, with the output quoted.
    (trial,) = await automl.trials(bomb)
    condition = trial["status"]["conditions"][-1]
    assert condition["type"] == "MetricsUnavailable", trial["status"]
    assert "a" * 18 + "b" in condition["message"], condition


def test_argo_when_regex_in_linear_time() -> None:
    """``=~`` in an Argo ``when`` is the tenant's regex too (govaluate's, i.e. Go's)."""
    start = time.perf_counter()
    assert evaluate_when(f"'{'a' * 17}b' =~ '{CATASTROPHIC}'") is False  # re: seconds
    assert time.perf_counter() - start < 0.1
    assert evaluate_when("'release-1.2' =~ '^release-[0-9.]+$'") is True
    with pytest.raises(ExpressionError, match=r"bad regular expression .*invalid perl operator"):
        evaluate_when("'ab' =~ 'a(?=b)'")
