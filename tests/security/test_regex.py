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
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.automl.app import create_app
from services.automl.collector import DEFAULT_FILTER, TextParser, feed_all
from services.automl.settings import Settings
from services.common.tenant_regex import compile_pattern
from services.pipeline.expressions import ExpressionError, evaluate_when
from tests.automl.conftest import API, NAMESPACE, AutoML, python_experiment, unique
from tests.conftest import InProcessService, own_service_fixture

PARAM = [{"name": "x", "parameterType": "double", "feasibleSpace": {"min": "1", "max": "2"}}]
CATASTROPHIC = r"((a|aa)+)+$"
# Two lines a backtracking engine spends seconds on each (2.3x more per extra "a").
EXPLODING_OUTPUT = "print('a' * 18 + 'b'); print('a' * 18 + 'b')"
FORMAT_FIELD = "spec.metricsCollectorSpec.source.filter.metricsFormat"


regex_service = own_service_fixture(
    create_app,
    Settings,
    "shipyard_sec_regex",
    namespace=NAMESPACE,
    resync_seconds=5,
    events_durable=f"sec-regex-{uuid.uuid4().hex[:8]}",
)


@pytest.fixture(scope="module")
async def automl(regex_service: InProcessService) -> AsyncIterator[AutoML]:
    async with AutoML.client_of(regex_service) as service:
        yield service


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


async def run_beside_another(
    automl: AutoML, code: str, metrics_format: list[str] | None = None
) -> tuple[float, dict[str, Any]]:
    """Run an experiment whose one trial runs ``code``, beside another experiment of three
    short trials, reading both every 0.1 s until both finish. The longest time between two
    reads (what a stalled service makes every other experiment wait) and the first
    experiment's trial."""
    first, other = unique("first"), unique("other")
    collector = {"source": {"filter": {"metricsFormat": metrics_format}}} if metrics_format else {}
    await automl.create(
        "experiments",
        python_experiment(
            first,
            code,
            parameters=PARAM,
            maxTrialCount=1,
            parallelTrialCount=1,
            metricsCollectorSpec=collector,
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
    finished: dict[str, dict[str, Any]] = {}
    longest_wait = 0.0
    last = time.monotonic()
    async with asyncio.timeout(120):
        while len(finished) < 2:
            for name in (first, other):
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
    other_trials = [t["status"] for t in await automl.trials(other)]
    assert finished[other]["status"].get("trialsSucceeded") == 3, json.dumps(other_trials)
    (trial,) = await automl.trials(first)
    return longest_wait, trial


async def test_catastrophic_metric_regex_does_not_delay_other_experiments(
    automl: AutoML,
) -> None:
    """The acceptance test of issue 10: while an experiment's collector applies
    ``((a|aa)+)+$`` to lines that make a backtracking engine explode, another experiment
    keeps progressing: its reads never wait 1 s, and it finishes."""
    longest_wait, trial = await run_beside_another(automl, EXPLODING_OUTPUT, [CATASTROPHIC])
    # A backtracking engine spends 7 s or more on each line on these machines (the pattern's
    # cost grows 2.3x per "a"); a healthy service's longest gap is well under 1 s, and 1.4 s
    # was seen once on a slow machine: 2.5 s tells the two apart with room for either.
    assert longest_wait < 2.5, f"the service stalled for {longest_wait:.2f} s"
    # The trial ran to the end; its regex found no number (the a's are no metric), so it
    # is MetricsUnavailable, with the output quoted.
    condition = trial["status"]["conditions"][-1]
    assert condition["type"] == "MetricsUnavailable", trial["status"]
    assert "a" * 18 + "b" in condition["message"], condition


@pytest.mark.parametrize("source", ["file", "stdout"])
async def test_long_trial_output_parsed_in_turns(source: str) -> None:
    """Linear is not enough when the output is long: a million lines take seconds even on
    RE2, so the collector gives the event loop a turn every 20 ms meanwhile (File-TEXT
    output comes as a list of lines, StdOut as the runtime's async stream)."""
    lines = ["a" * 18 + "b"] * 200_000

    async def stream() -> AsyncIterator[str]:
        for line in lines:
            yield line

    turns = 0
    stop = asyncio.Event()

    async def other_experiment() -> None:
        nonlocal turns
        while not stop.is_set():
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(other_experiment())
    await asyncio.sleep(0)
    start, turns = time.monotonic(), 0
    parser = TextParser(["loss"], [CATASTROPHIC])
    assert await feed_all(parser, lines if source == "file" else stream()) == []
    elapsed = time.monotonic() - start
    stop.set()
    await other
    assert turns >= elapsed / 0.1, f"{turns} turns in {elapsed:.2f} s of parsing"


@pytest.mark.parametrize(
    "pattern",
    [
        DEFAULT_FILTER,
        r"(\w+):\s*([+-]?\d*(\.\d+)?)",
        r"a*",
        "",
        r"(a)|(b)",
        r"(é+)(.)",
        r".",
        r"\b",
    ],
)
def test_tenant_pattern_findall_agrees_with_re(pattern: str) -> None:
    """The collector's findall (RE2's Match on UTF-8 bytes, groups sliced out) reports what
    ``re.findall`` does where the two engines agree: empty matches, unset groups, non-ASCII
    text (``\\w`` and ``\\b`` are ASCII in RE2, as in Go, so those get ASCII text)."""
    texts = ["", "aa", "abab", "loss: 0.5 acc: 1", "a=1 b=2 c=3e5", "12a34", "ab\nab"]
    if "\\w" not in pattern and "\\b" not in pattern:
        texts += ["ééx é", "héllo wörld=1"]
    compiled = compile_pattern(pattern)
    for text in texts:
        assert compiled.findall(text) == re.findall(pattern, text), text
        assert compiled.search(text) == (re.search(pattern, text) is not None), text


def test_argo_when_regex_in_linear_time() -> None:
    """``=~`` in an Argo ``when`` is the tenant's regex too (govaluate's, i.e. Go's)."""
    times = []
    for _ in range(3):  # the fastest of three: one can be descheduled on a busy machine
        start = time.perf_counter()
        assert evaluate_when(f"'{'a' * 17}b' =~ '{CATASTROPHIC}'") is False  # re: seconds
        times.append(time.perf_counter() - start)
    assert min(times) < 0.1, times
    assert evaluate_when("'release-1.2' =~ '^release-[0-9.]+$'") is True
    with pytest.raises(ExpressionError, match=r"bad regular expression .*invalid perl operator"):
        evaluate_when("'ab' =~ 'a(?=b)'")
