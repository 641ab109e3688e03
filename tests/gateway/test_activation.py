"""Requests for a scaled-to-zero InferenceService are held until it serves (gateway side)."""

from __future__ import annotations

import asyncio

from gateway.routes import RouteFeeder, RouteTable
from services.common.activity import Activity

from .test_proxy import NS, bearer

KIND = "inferenceservice"


def scaled_to_zero(name: str, min_replicas: int = 0) -> dict[str, object]:
    return {
        "metadata": {"namespace": NS, "name": name},
        "spec": {"predictor": {"minReplicas": min_replicas}},
        "status": {
            "url": f"http://gateway/serving/{NS}/{name}",
            "components": {
                "predictor": {
                    "url": f"http://gateway/serving/{NS}/{name}",
                    "desiredReplicas": 0,
                    "actualReplicas": 0,
                    "traffic": [{"revisionName": f"{name}-predictor-00001", "percent": 100}],
                }
            },
        },
    }


def test_route_table_scaled_to_zero_is_activatable_without_targets() -> None:
    table = RouteTable()
    feeder = RouteFeeder(table)
    feeder.apply(KIND, scaled_to_zero("z"))
    # status.url is the gateway's own URL: never a target, even as the fallback.
    assert table.pick(KIND, NS, "z") is None and table.activatable(KIND, NS, "z")
    feeder.apply(KIND, scaled_to_zero("one", min_replicas=1))
    assert not table.activatable(KIND, NS, "one")
    feeder.apply_event(
        "shipyard.serving.inferenceservice.deleted", {"metadata": {"namespace": NS, "name": "z"}}
    )
    assert not table.activatable(KIND, NS, "z")


def test_activity_report_round_trip_and_refusal() -> None:
    report = Activity(NS, "z", requests=3, in_flight=1, waiting=2, seconds=2.0)
    assert Activity.decode(report.encode()) == report
    # A report without a span (from a gateway before it was added) spans nothing.
    assert Activity.decode(b'{"namespace": "a", "name": "b", "requests": 4}').seconds == 0.0
    for bad in (
        b"[]",
        b'{"namespace": "a"}',
        b'{"namespace": "a", "name": "b", "waiting": -1}',
        b'{"namespace": "a", "name": "b", "seconds": -1}',
        b'{"namespace": "a", "name": "b", "seconds": "2"}',
    ):
        try:
            Activity.decode(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad!r}")


async def test_proxy_holds_concurrent_requests_for_one_activation(
    client, gateway, upstream, oidc
) -> None:
    gw = gateway.gw
    gw.route_table.set_activatable(KIND, NS, "z", True)
    token = await oidc.id_token("user@example.com")
    held = [
        asyncio.create_task(client.get(f"/serving/{NS}/z/v2/health/ready", headers=bearer(token)))
        for _ in range(3)
    ]
    # All three are held (bounded wait: verifying the bearer token may fetch the JWKS first).
    for _ in range(100):
        if gw.activity.waiting.get((NS, "z")) == 3:
            break
        await asyncio.sleep(0.05)
    assert not any(t.done() for t in held)
    assert gw.activity.waiting[(NS, "z")] == 3 and len(gw.activator._activations) == 1
    gw.route_table.upsert(KIND, NS, "z", [(upstream.url, 100)])
    answers = await asyncio.gather(*held)
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert (NS, "z") not in gw.activity.waiting
    gw.route_table.remove(KIND, NS, "z")


async def test_proxy_activation_timeout_503_inference_error(client, gateway, oidc) -> None:
    gw = gateway.gw
    gw.route_table.set_activatable(KIND, NS, "never", True)
    saved, gw.activator.timeout = gw.activator.timeout, 0.3
    try:
        token = await oidc.id_token("user@example.com")
        r = await client.get(f"/serving/{NS}/never/v2/health/ready", headers=bearer(token))
    finally:
        gw.activator.timeout = saved
        gw.route_table.remove(KIND, NS, "never")
    assert r.status_code == 503
    assert r.json().keys() == {"error"} and "did not become ready within 0.3 s" in r.json()["error"]


async def test_proxy_activation_failed_revision_503_at_once(client, gateway, oidc) -> None:
    gw = gateway.gw
    obj = scaled_to_zero("broken")
    obj["status"]["conditions"] = [  # type: ignore[index]
        {"type": "PredictorReady", "status": "False", "reason": "RevisionFailed", "message": "bad"}
    ]
    RouteFeeder(gw.route_table).apply(KIND, obj)
    try:
        token = await oidc.id_token("user@example.com")
        r = await client.get(f"/serving/{NS}/broken/v2/health/ready", headers=bearer(token))
    finally:
        gw.route_table.remove(KIND, NS, "broken")
    assert r.status_code == 503
    assert r.json()["error"].endswith("failed to start again: bad")


async def test_a_route_that_trails_ready_status_is_waited_for_briefly() -> None:
    """A client that read Ready may ask before the route table has the endpoint (it hears of
    it by event): the request waits for the route, up to the grace, instead of a 503."""
    from gateway.activation import Activator
    from gateway.activity import ActivityReporter

    table = RouteTable()
    activator = Activator(table, ActivityReporter(None, 60), timeout=5)  # type: ignore[arg-type]
    activator.route_grace_seconds = 1.0
    loop = asyncio.get_running_loop()
    loop.call_later(0.2, table.upsert, "notebook", NS, "nb", [("http://127.0.0.1:1", 100)])
    loop.call_later(0.2, table.upsert, KIND, NS, "m", [("http://127.0.0.1:2", 100)])
    assert await activator.settle("notebook", NS, "nb") == "http://127.0.0.1:1"
    assert await activator.endpoint(NS, "m") == "http://127.0.0.1:2"
    started = loop.time()
    assert await activator.settle("notebook", NS, "unknown") is None
    assert 0.9 < loop.time() - started < 2.0
