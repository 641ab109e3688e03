"""The steady mix the chaos tests run through the gateway while they take something away.

- workflows of three steps on a volume of their own: ``a`` (long enough to be running when
  the fault starts) and ``b`` each append a line to a file of their own; ``tally`` prints
  how many lines each file has, so its ``outputs.result`` says how often each step ran;
- a small Katib experiment whose trials take about a second;
- an sklearn InferenceService (the model tests/serving trains) that predictions go to
  through the gateway, several a second;
- a watch on workflows that, like a client-go informer, reconnects from the last
  resourceVersion it saw whenever its stream ends or fails.
"""

from __future__ import annotations

import contextlib
import functools
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests import specs

NS = "kubeflow-user-example-com"
ARGO = f"/apis/argoproj.io/v1alpha1/namespaces/{NS}/workflows"
KATIB = f"/apis/kubeflow.org/v1beta1/namespaces/{NS}"
CLAIMS = f"/api/v1/namespaces/{NS}/persistentvolumeclaims"
FINISHED = ("Succeeded", "Failed", "Error")

T = TypeVar("T")
#: The chaos clients drop an idle connection after this many seconds, below the servers' own
#: keep-alive timeout (uvicorn's 5 s): a connection the server is closing just then is not
#: reused (seen once as "Connection reset by peer" on the test's own client).
CLIENT_KEEPALIVE_SECONDS = 2.0


def api_client(gateway: str, timeout: float | httpx.Timeout = 20) -> httpx.Client:
    """The chaos tests' HTTP client of the gateway."""
    limits = httpx.Limits(keepalive_expiry=CLIENT_KEEPALIVE_SECONDS)
    return httpx.Client(base_url=gateway, timeout=timeout, limits=limits)


def wait_until(what: str, check: Callable[[], T | None], timeout: float, every: float = 0.2) -> T:
    """Poll ``check()`` until it returns something truthy (and return that); fail naming
    ``what`` after ``timeout`` seconds, with the last value seen."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except httpx.HTTPError as exc:  # the platform may be coming back: poll again
            last = None
            note = repr(exc)
        else:
            note = ""
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last!r} {note})")


def readiness(url: str) -> tuple[int, dict[str, Any]]:
    """``/readyz`` of a service or the gateway: (status code, body)."""
    r = httpx.get(f"{url}/readyz", timeout=10)
    return r.status_code, r.json()


def unready(url: str) -> dict[str, Any] | None:
    """The ``/readyz`` body while it says 503, else None."""
    code, body = readiness(url)
    return body if code == 503 else None


def ready(url: str) -> bool:
    return readiness(url)[0] == 200


def all_unready(service_urls: dict[str, str], checks: dict[str, bool], timeout: float) -> None:
    """Each service comes to say it is not ready, with exactly ``checks`` as its checks."""
    for name, url in service_urls.items():
        body = wait_until(f"{name} not ready", functools.partial(unready, url), timeout)
        assert body["checks"] == checks, (name, body)


def all_ready_again(service_urls: dict[str, str], timeout: float = 60) -> None:
    for name, url in service_urls.items():
        wait_until(f"{name} ready again", functools.partial(ready, url), timeout)


def create_claim(api: httpx.Client, name: str) -> dict[str, Any]:
    claim = specs.claim(name, "1Mi")
    r = api.post(CLAIMS, json=claim)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def tallied_workflow(name: str, claim: str, first_step_seconds: float) -> dict[str, Any]:
    """Steps ``a`` then ``b`` each append "ran" to their own file on ``claim``; ``tally``
    prints ``a=<lines> b=<lines>``: exactly once is ``a=1 b=1``."""

    workflow = specs.counted_workflow(
        name, claim, {"a": f"sleep {first_step_seconds}", "b": "true"}, labels={"chaos": "mix"}
    )
    templates = workflow["spec"]["templates"]
    templates[0]["steps"].append([{"name": "tally", "template": "tally"}])
    templates.append(
        {
            "name": "tally",
            "script": {
                "image": "alpine",
                "command": ["sh"],
                "source": 'echo "a=$(wc -l < /m/a) b=$(wc -l < /m/b)"',
                "volumeMounts": [{"name": "m", "mountPath": "/m"}],
            },
        }
    )
    return workflow


def start_workflow(api: httpx.Client, name: str, first_step_seconds: float) -> dict[str, Any]:
    create_claim(api, f"{name}-marks")
    r = api.post(ARGO, json=tallied_workflow(name, f"{name}-marks", first_step_seconds))
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def phase(api: httpx.Client, name: str) -> str:
    r = api.get(f"{ARGO}/{name}")
    if r.status_code != 200:
        return f"HTTP {r.status_code}"
    return str(r.json().get("status", {}).get("phase", ""))


def running(api: httpx.Client, name: str) -> bool:
    return phase(api, name) == "Running"


def finished_workflow(api: httpx.Client, name: str, timeout: float) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        r = api.get(f"{ARGO}/{name}")
        if r.status_code == 200 and r.json().get("status", {}).get("phase") in FINISHED:
            return r.json()  # type: ignore[no-any-return]
        return None

    return wait_until(f"workflow {name} finished", done, timeout)


def tally(workflow: dict[str, Any]) -> str:
    """The ``tally`` step's output (``a=N b=M``)."""
    nodes = workflow["status"]["nodes"].values()
    found = [n for n in nodes if n.get("displayName") == "tally"]
    assert len(found) == 1, [n.get("displayName") for n in nodes]
    return str(found[0].get("outputs", {}).get("result", "")).strip()


def fast_experiment(name: str, trials: int, parallel: int, seconds: float) -> dict[str, Any]:
    """Random search over one parameter; each trial sleeps ``seconds`` and prints its loss."""
    code = f"import sys, time; time.sleep({seconds}); print(f'loss={{float(sys.argv[1]):.5f}}')"
    return specs.python_experiment(name, code, maxTrialCount=trials, parallelTrialCount=parallel)


def start_experiment(
    api: httpx.Client, name: str, trials: int, parallel: int, seconds: float
) -> dict[str, Any]:
    r = api.post(f"{KATIB}/experiments", json=fast_experiment(name, trials, parallel, seconds))
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def finished_work(
    api: httpx.Client, workflows: list[str], experiment: str, timeout: float = 180
) -> tuple[dict[str, dict[str, Any]], tuple[str, str]]:
    """Wait for the workflows and the experiment to finish: (each workflow by name, the
    experiment's final condition)."""
    done = {name: finished_workflow(api, name, timeout) for name in workflows}
    condition = wait_until(
        "experiment finished", lambda: experiment_condition(api, experiment), timeout
    )
    return done, condition


def experiment_condition(api: httpx.Client, name: str) -> tuple[str, str] | None:
    """(type, reason) of the experiment's final condition, None while it runs."""
    r = api.get(f"{KATIB}/experiments/{name}")
    if r.status_code != 200:
        return None
    for c in reversed(r.json().get("status", {}).get("conditions", [])):
        if c["status"] == "True" and c["type"] in ("Succeeded", "Failed"):
            return c["type"], c.get("reason", "")
    return None


def trials_of(api: httpx.Client, experiment: str) -> list[dict[str, Any]]:
    r = api.get(
        f"{KATIB}/trials", params={"labelSelector": f"katib.kubeflow.org/experiment={experiment}"}
    )
    assert r.status_code == 200, r.text
    return r.json()["items"]  # type: ignore[no-any-return]


@dataclass
class WorkflowWatcher:
    """A watch on the namespace's workflows that resumes from its last resourceVersion."""

    gateway: str
    resource_version: str
    events: list[tuple[str, str, int, str]] = field(default_factory=list)  # type, name, rv, phase
    reconnects: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _response: httpx.Response | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="chaos-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop recording and hang up the watch: an open watch would hold the gateway's and
        the pipeline service's shutdown for their graceful-shutdown timeout (5 s)."""
        self._stop.set()
        response = self._response
        if response is not None:
            # shutdown, not close: it wakes the thread blocked reading the stream.
            sock = response.extensions.get("network_stream")
            raw = sock.get_extra_info("socket") if sock is not None else None
            with contextlib.suppress(OSError):
                if raw is not None:
                    raw.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=1)

    def seen(self, name: str) -> list[tuple[str, int, str]]:
        return [(t, rv, p) for t, n, rv, p in list(self.events) if n == name]

    def _run(self) -> None:
        with api_client(self.gateway, httpx.Timeout(10, read=30)) as client:
            while not self._stop.is_set():
                try:
                    self._stream(client)
                except (httpx.HTTPError, json.JSONDecodeError) as exc:
                    if self._stop.is_set():
                        return  # hung up by stop()
                    self.failures.append(repr(exc))
                if self._stop.wait(1.0):
                    return
                self.reconnects += 1

    def _stream(self, client: httpx.Client) -> None:
        params = {"watch": "1", "resourceVersion": self.resource_version, "timeoutSeconds": "60"}
        with client.stream("GET", ARGO, params=params) as r:
            self._response = r
            if r.status_code != 200:
                self.failures.append(f"HTTP {r.status_code}: {r.read()[:200]!r}")
                return
            for line in r.iter_lines():
                if self._stop.is_set():
                    return
                if not line.strip():
                    continue
                event = json.loads(line)
                obj = event["object"]
                if event["type"] == "ERROR":
                    self.failures.append(f"ERROR event: {obj}")
                    continue
                rv = obj["metadata"]["resourceVersion"]
                self.events.append(
                    (
                        event["type"],
                        obj["metadata"]["name"],
                        int(rv),
                        str(obj.get("status", {}).get("phase", "")),
                    )
                )
                self.resource_version = rv


def workflow_watcher(api: httpx.Client, gateway: str) -> tuple[int, WorkflowWatcher]:
    """A watch of the workflows from now on (not started): the list's resourceVersion and it."""
    listed = api.get(ARGO)
    assert listed.status_code == 200, listed.text
    start_rv = int(listed.json()["metadata"]["resourceVersion"])
    return start_rv, WorkflowWatcher(gateway, str(start_rv))


def start_load(
    api: httpx.Client,
    gateway: str,
    experiment: str,
    *,
    trials: int,
    seconds: float,
    workflows: dict[str, float],
) -> tuple[int, WorkflowWatcher]:
    """The load an outage test runs under: a watch of the workflows (started; the caller stops
    it), the experiment (``trials`` trials of ``seconds`` each, two at a time) and the
    workflows (name: its first step's seconds); returns once each workflow runs and a trial
    exists, with the watch's start resourceVersion and the watch."""
    start_rv, watcher = workflow_watcher(api, gateway)
    watcher.start()
    try:
        start_experiment(api, experiment, trials=trials, parallel=2, seconds=seconds)
        for name, first_step_seconds in workflows.items():
            start_workflow(api, name, first_step_seconds=first_step_seconds)
        for name in workflows:
            wait_until(f"{name} running", functools.partial(running, api, name), 60)
        wait_until("a trial", lambda: trials_of(api, experiment), 60)
    except BaseException:
        watcher.stop()
        raise
    return start_rv, watcher


def assert_work_done(
    api: httpx.Client,
    workflows: dict[str, dict[str, Any]],
    condition: tuple[str, str] | None,
    experiment: str,
    trials: int,
    *,
    each_trial_succeeded: bool = True,
) -> None:
    """What a fault must not change: each finished workflow Succeeded with each step run
    once, and the experiment reached its ``trials`` trials (each of them Succeeded)."""
    for name, wf in workflows.items():
        assert wf["status"]["phase"] == "Succeeded", (name, wf["status"])
        assert tally(wf) == "a=1 b=1", (name, tally(wf))
    assert condition == ("Succeeded", "ExperimentMaxTrialsReached"), condition
    found = trials_of(api, experiment)
    assert len(found) == trials, [t["metadata"]["name"] for t in found]
    if each_trial_succeeded:
        for trial in found:
            types = {c["type"] for c in trial["status"]["conditions"] if c["status"] == "True"}
            assert "Succeeded" in types, trial["status"]


def assert_completions_applied_once(query: Callable[[str], list[Any]], trials: int) -> None:
    """The automl consumer applied each trial completion event exactly once (its inbox)."""
    completions = sorted(
        msg_id
        for (msg_id,) in query(
            "SELECT msg_id FROM automl.outbox WHERE subject = 'shipyard.automl.trial.completed'"
        )
    )
    assert len(completions) == trials, completions
    # The experiment can finish before the last completion event has gone through the outbox
    # relay and the consumer (the controller also sees its own completions), and an event the
    # killed process had fetched but not acked comes again only after the consumer's ack_wait
    # (30 s): wait for the consumer to catch up, then the inbox must hold each completion, and
    # nothing else.
    deadline = time.monotonic() + 75
    while True:
        applied = sorted(msg_id for (msg_id,) in query("SELECT msg_id FROM automl.inbox"))
        if applied == completions or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert applied == completions, (applied, completions)


def committed_workflow_versions(
    query: Callable[[str], list[tuple[Any, ...]]], after: int
) -> list[int]:
    """resourceVersions of every committed workflow change after ``after`` (the pipeline
    service's outbox, which watches replay from)."""
    rows = query(
        "SELECT resource_version FROM pipeline.outbox WHERE kind = 'Workflow' "
        f"AND resource_version > {int(after)} ORDER BY resource_version"
    )
    return [int(rv) for (rv,) in rows]


def watch_caught_up(
    query: Callable[[str], list[tuple[Any, ...]]], watcher: WorkflowWatcher, after: int
) -> list[int]:
    """Wait until the watch has the last committed workflow change; the committed list."""

    def caught_up() -> list[int] | None:
        committed = committed_workflow_versions(query, after)
        events = list(watcher.events)
        return committed if events and committed and events[-1][2] == committed[-1] else None

    return wait_until("the watch caught up", caught_up, 60)


def check_watch_saw_every_change(
    watcher: WorkflowWatcher, committed: list[int], workflows: list[str]
) -> None:
    """The watch got every committed workflow change once, in resourceVersion order, and
    each workflow from its ADDED to its Succeeded."""
    rvs = [rv for _, _, rv, _ in watcher.events]
    assert rvs == committed, (rvs, committed, watcher.failures)
    for name in workflows:
        seen = watcher.seen(name)
        assert seen and seen[0][0] == "ADDED" and seen[-1][2] == "Succeeded", (name, seen)


ISVC = f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices"
# Two rows of the iris-like data tests/serving trains on, and the classes the model gives.
SAMPLES = [[5.0, 3.4, 1.5, 0.2], [6.6, 3.0, 5.6, 2.0]]
PREDICTIONS = [0, 2]


def start_sklearn_isvc(api: httpx.Client, name: str, volume_dir: Path, claim: str) -> None:
    """Train the small sklearn model of tests/serving into ``volume_dir`` (the data directory
    of ``claim``) and serve it over KServe V1."""
    from tests.serving.conftest import train_sklearn

    train_sklearn(volume_dir / name)
    body = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {
            "predictor": {
                "model": {
                    "modelFormat": {"name": "sklearn"},
                    "storageUri": f"pvc://{claim}/{name}",
                }
            }
        },
    }
    r = api.post(ISVC, json=body)
    assert r.status_code == 201, r.text


def isvc_ready(api: httpx.Client, name: str) -> dict[str, Any] | None:
    r = api.get(f"{ISVC}/{name}")
    if r.status_code != 200:
        return None
    conditions = r.json().get("status", {}).get("conditions", [])
    if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
        return r.json()  # type: ignore[no-any-return]
    return None


@dataclass
class InferenceTraffic:
    """Predictions through the gateway every ``every`` seconds, each outcome recorded as
    (monotonic time, HTTP status or the transport error's name, body)."""

    gateway: str
    isvc: str
    every: float = 0.2
    outcomes: list[tuple[float, str, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"/serving/{NS}/{self.isvc}/v1/models/{self.isvc}:predict"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="chaos-inference", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)

    def _run(self) -> None:
        with api_client(self.gateway, 10) as client:
            while not self._stop.wait(self.every):
                try:
                    r = client.post(self.url, json={"instances": SAMPLES})
                except httpx.HTTPError as exc:
                    self.outcomes.append((time.monotonic(), type(exc).__name__, ""))
                    continue
                self.outcomes.append((time.monotonic(), str(r.status_code), r.text))

    def answered(self, since: float) -> bool:
        """True once a prediction made after ``since`` came back right."""
        return any(t > since and code == "200" for t, code, _ in list(self.outcomes))

    def wrong_answers(self) -> list[str]:
        """Bodies of 200 responses that are not the model's predictions (should be none)."""
        right = {"predictions": PREDICTIONS}
        return [
            body
            for _, code, body in list(self.outcomes)
            if code == "200" and json.loads(body) != right
        ]

    def failures_between(self, start: float, end: float) -> list[tuple[str, str]]:
        return [
            (code, body[:200])
            for t, code, body in list(self.outcomes)
            if start <= t <= end and code != "200"
        ]


def object_uids(api: httpx.Client) -> dict[str, str]:
    """``path/name`` -> uid of every object the mix created."""
    found: dict[str, str] = {}
    for path in (ARGO, CLAIMS, f"{KATIB}/experiments", f"{KATIB}/trials", ISVC):
        r = api.get(path)
        assert r.status_code == 200, r.text
        for item in r.json()["items"]:
            found[f"{path}/{item['metadata']['name']}"] = item["metadata"]["uid"]
    return found
