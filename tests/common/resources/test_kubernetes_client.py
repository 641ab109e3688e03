"""The official kubernetes Python client works unchanged against the resource API.

The client talks straight to a service of test-only kinds here (widgets.py), with the
gateway's identity assertion added as a default header; tests/test_platform.py does the
same through the real gateway.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from services.common.identity import ASSERTION_HEADER
from tests.common.resources.conftest import NAMESPACE, RunningService

GROUP, VERSION, PLURAL = "test.shipyard.io", "v1", "widgets"


def api_client(svc: RunningService) -> client.ApiClient:
    config = client.Configuration(host=svc.url)
    return client.ApiClient(
        config, header_name=ASSERTION_HEADER, header_value=svc.headers()[ASSERTION_HEADER]
    )


def widget(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "test.shipyard.io/v1",
        "kind": "Widget",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"color": "green", "parts": [{"name": "bolt", "count": 4}]},
    }


async def test_custom_objects_crud_and_watch(widget_service: RunningService) -> None:
    api = client.CustomObjectsApi(api_client(widget_service))
    initial = await asyncio.to_thread(
        api.list_namespaced_custom_object, GROUP, VERSION, NAMESPACE, PLURAL
    )
    start_rv = initial["metadata"]["resourceVersion"]

    events: list[tuple[str, str, str]] = []
    done = threading.Event()

    def run_watch() -> None:
        w = watch.Watch()
        for event in w.stream(
            api.list_namespaced_custom_object,
            GROUP,
            VERSION,
            NAMESPACE,
            PLURAL,
            resource_version=start_rv,
            timeout_seconds=20,
        ):
            obj = event["object"]
            events.append(
                (
                    event["type"],
                    obj["metadata"]["name"],
                    obj["metadata"].get("labels", {}).get("stage", ""),
                )
            )
            if event["type"] == "DELETED":
                w.stop()
        done.set()

    watcher = threading.Thread(target=run_watch, daemon=True)
    watcher.start()

    created = await asyncio.to_thread(
        api.create_namespaced_custom_object,
        GROUP,
        VERSION,
        NAMESPACE,
        PLURAL,
        widget("nb1", {"stage": "dev"}),
    )
    assert created["metadata"]["uid"] and created["metadata"]["creationTimestamp"]
    await asyncio.to_thread(
        api.create_namespaced_custom_object,
        GROUP,
        VERSION,
        NAMESPACE,
        PLURAL,
        widget("nb2", {"stage": "prod"}),
    )

    got = await asyncio.to_thread(
        api.get_namespaced_custom_object, GROUP, VERSION, NAMESPACE, PLURAL, "nb1"
    )
    assert got["spec"] == {"color": "green", "size": 1, "parts": [{"name": "bolt", "count": 4}]}

    selected = await asyncio.to_thread(
        api.list_namespaced_custom_object,
        GROUP,
        VERSION,
        NAMESPACE,
        PLURAL,
        label_selector="stage=dev",
    )
    assert [i["metadata"]["name"] for i in selected["items"]] == ["nb1"]

    patched = await asyncio.to_thread(
        api.patch_namespaced_custom_object,
        GROUP,
        VERSION,
        NAMESPACE,
        PLURAL,
        "nb1",
        {"metadata": {"labels": {"stage": "test"}}},
    )
    assert patched["metadata"]["labels"] == {"stage": "test"}
    assert int(patched["metadata"]["resourceVersion"]) > int(got["metadata"]["resourceVersion"])

    stale = dict(got)  # still carries the resourceVersion from before the patch
    with pytest.raises(ApiException) as conflict:
        await asyncio.to_thread(
            api.replace_namespaced_custom_object, GROUP, VERSION, NAMESPACE, PLURAL, "nb1", stale
        )
    assert conflict.value.status == 409
    assert '"reason":"Conflict"' in conflict.value.body.replace(" ", "")

    fresh = dict(patched)
    fresh["spec"]["color"] = "blue"
    replaced = await asyncio.to_thread(
        api.replace_namespaced_custom_object, GROUP, VERSION, NAMESPACE, PLURAL, "nb1", fresh
    )
    assert replaced["metadata"]["generation"] == 2

    await asyncio.to_thread(
        api.delete_namespaced_custom_object, GROUP, VERSION, NAMESPACE, PLURAL, "nb1"
    )
    with pytest.raises(ApiException) as missing:
        await asyncio.to_thread(
            api.get_namespaced_custom_object, GROUP, VERSION, NAMESPACE, PLURAL, "nb1"
        )
    assert missing.value.status == 404

    await asyncio.to_thread(done.wait, 20)
    assert ("ADDED", "nb1", "dev") in events
    assert ("ADDED", "nb2", "prod") in events
    assert ("MODIFIED", "nb1", "test") in events
    assert events[-1][:2] == ("DELETED", "nb1")
    types = [e[0] for e in events]
    assert types.index("ADDED") < types.index("MODIFIED") < types.index("DELETED")


async def test_core_v1_persistent_volume_claims(widget_service: RunningService) -> None:
    core = client.CoreV1Api(api_client(widget_service))
    body = client.V1PersistentVolumeClaim(
        metadata=client.V1ObjectMeta(name="data", labels={"app": "train"}),
        spec=client.V1PersistentVolumeClaimSpec(
            access_modes=["ReadWriteOnce"],
            resources=client.V1VolumeResourceRequirements(requests={"storage": "128Mi"}),
        ),
    )
    created = await asyncio.to_thread(
        core.create_namespaced_persistent_volume_claim, NAMESPACE, body
    )
    assert created.metadata.name == "data"
    assert created.spec.resources.requests == {"storage": "128Mi"}

    listed = await asyncio.to_thread(
        core.list_namespaced_persistent_volume_claim, NAMESPACE, label_selector="app=train"
    )
    assert [p.metadata.name for p in listed.items] == ["data"]
    none = await asyncio.to_thread(
        core.list_namespaced_persistent_volume_claim, NAMESPACE, label_selector="app notin (train)"
    )
    assert "data" not in [p.metadata.name for p in none.items]

    patched = await asyncio.to_thread(
        core.patch_namespaced_persistent_volume_claim,
        "data",
        NAMESPACE,
        {"metadata": {"annotations": {"a": "b"}}},
    )
    assert patched.metadata.annotations == {"a": "b"}

    with pytest.raises(ApiException) as exc:
        await asyncio.to_thread(core.read_namespaced_persistent_volume_claim, "nope", NAMESPACE)
    assert exc.value.status == 404
