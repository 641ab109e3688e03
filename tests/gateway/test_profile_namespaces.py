"""Profiles map to the runtime's namespaces (``SHIPYARD_RUNTIME=kubernetes``).

The runtime here is a **fake**: a ``Runtime`` subclass that records ``ensure_namespace`` and
``delete_namespace`` calls and fails on demand. The gateway's part is to call that seam at the
right moments (create, delete, a change of owner, every start), to keep the Profile when the
runtime fails and to retry; what ``KubernetesRuntime.ensure_namespace`` then does in a
cluster (Namespace, ServiceAccounts, RoleBindings, NetworkPolicy) is tested with the runtime
itself, against an emulated API server, in tests/common/runtime. No kube-apiserver can run on
these machines, and a fake that can fail at will is what shows the retries.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

import gateway.profiles as profiles_module
from gateway.app import create_app
from gateway.profiles import (
    NamespaceSync,
    NamespaceWish,
    ProfileStore,
    namespace_for_user,
    namespace_sync_for,
)
from services.common.db import Database
from services.common.runtime import Runtime, RuntimeBackendError
from tests.common.runtime.fakes import NamespacesOnlyRuntime
from tests.conftest import free_port
from tests.gateway.conftest import OIDCServer, RunningServer, ServedGateway, gateway_settings


class FakeNamespaceRuntime(NamespacesOnlyRuntime):
    """A fake runtime: only namespaces, recorded; ``failing`` makes every call raise (its
    workload and volume methods raise ``NotImplementedError``: not what these tests are about)."""

    name = "fake"

    def __init__(self) -> None:
        self.calls: builtins.list[tuple[str, str, str | None]] = []
        self.quotas: dict[str, dict[str, str] | None] = {}  # the last ensure's, per namespace
        self.failing = False
        self.closed = False

    async def ensure_namespace(
        self, namespace: str, owner: str, quota: Mapping[str, str] | None = None
    ) -> None:
        self.calls.append(("ensure", namespace, owner))
        self.quotas[namespace] = dict(quota) if quota else None
        if self.failing:
            raise RuntimeBackendError("the API server is unavailable (fake)")

    async def delete_namespace(self, namespace: str) -> None:
        self.calls.append(("delete", namespace, None))
        if self.failing:
            raise RuntimeBackendError("the API server is unavailable (fake)")

    def calls_for(self, namespace: str) -> builtins.list[tuple[str, str | None]]:
        return [(verb, owner) for verb, ns, owner in self.calls if ns == namespace]

    async def close(self) -> None:
        self.closed = True


def _profile(name: str, owner: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"owner": {"kind": "User", "name": owner}}}


def _ready(obj: dict[str, Any]) -> str:
    (condition,) = [c for c in obj["status"]["conditions"] if c["type"] == "Ready"]
    return str(condition["status"])


async def _until(check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def _sync(runtime: Runtime, retry_seconds: float = 0.05) -> NamespaceSync:
    return NamespaceSync(lambda: runtime, retry_seconds=retry_seconds, max_retry_seconds=0.2)


async def _store(tmp_path: Path, namespaces: NamespaceSync | None) -> ProfileStore:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}", "gateway")
    store = ProfileStore(db, reload_seconds=0.05, namespaces=namespaces)
    await store.start()
    return store


async def _stop(store: ProfileStore) -> None:
    await store.stop()
    await store.db.dispose()


# ---- the store ---------------------------------------------------------------------------


async def test_create_delete_and_owner_change_reach_the_runtime(tmp_path: Path) -> None:
    fake = FakeNamespaceRuntime()
    store = await _store(tmp_path, _sync(fake))
    try:
        obj = await store.create_profile(_profile("team-a", "a@example.com"))
        assert _ready(obj) == "True"
        assert fake.calls_for("team-a") == [("ensure", "a@example.com")]

        await store.patch_profile("team-a", {"metadata": {"labels": {"x": "y"}}})
        assert fake.calls_for("team-a") == [("ensure", "a@example.com")]  # owner unchanged
        await store.patch_profile("team-a", {"spec": {"owner": {"name": "b@example.com"}}})
        assert fake.calls_for("team-a")[-1] == ("ensure", "b@example.com")

        await store.delete_profile("team-a")
        assert fake.calls_for("team-a")[-1] == ("delete", None)
        assert not store.namespaces or not store.namespaces.pending
    finally:
        await _stop(store)
    assert fake.closed  # the store closes the runtime it built


async def test_runtime_failure_keeps_the_profile_and_is_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeNamespaceRuntime()
    fake.failing = True
    store = await _store(tmp_path, _sync(fake))
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.profiles"):
            obj = await store.create_profile(_profile("team-b", "b@example.com"))
        # Stored and returned; not Ready, and the log says why.
        assert obj["metadata"]["name"] == "team-b" and _ready(obj) == "False"
        assert obj["status"]["conditions"][0]["reason"] == "NamespaceNotReady"
        assert "unavailable (fake)" not in str(obj)  # the runtime's error stays in the log
        assert store.snapshot.owners["team-b"] == "b@example.com"
        assert any("could not make its namespace" in r.getMessage() for r in caplog.records)
        assert any("unavailable (fake)" in r.getMessage() for r in caplog.records)

        # Still failing: retried with back-off, several times.
        await _until(lambda: len(fake.calls_for("team-b")) >= 3)
        assert store.namespaces is not None
        assert store.namespaces.pending["team-b"][1] >= 3  # attempts
        fake.failing = False
        await _until(lambda: store.namespaces is not None and not store.namespaces.pending)
        assert set(fake.calls_for("team-b")) == {("ensure", "b@example.com")}
        assert _ready(await store.get_profile("team-b")) == "True"

        # A failed delete is retried too, and never raises.
        fake.failing = True
        await store.delete_profile("team-b")
        assert store.namespaces.pending["team-b"][0] is None
        fake.failing = False
        await _until(lambda: not store.namespaces.pending)  # type: ignore[union-attr]
        assert fake.calls_for("team-b")[-1] == ("delete", None)
    finally:
        await _stop(store)


async def test_retry_follows_what_the_profiles_want_now(tmp_path: Path) -> None:
    """A pending ensure for a profile deleted since is dropped, not replayed (it would make
    a namespace nobody owns); a pending delete of a name registered again is dropped."""
    fake = FakeNamespaceRuntime()
    sync = _sync(fake, retry_seconds=3600)  # no retry on its own during the test
    store = await _store(tmp_path, sync)
    try:
        fake.failing = True
        await store.create_profile(_profile("team-c", "c@example.com"))
        await store.create_profile(_profile("team-d", "d@example.com"))
        fake.failing = False
        # team-c is deleted meanwhile; the delete succeeds and clears the pending ensure.
        await store.delete_profile("team-c")
        assert "team-c" not in sync.pending
        # team-d's pending ensure is made stale by a deletion elsewhere (another replica).
        sync.pending["team-d"] = (*sync.pending["team-d"][:2], 0.0, "x")  # due now
        wishes = {k: NamespaceWish(v) for k, v in store.snapshot.owners.items() if k != "team-d"}
        before = len(fake.calls)
        await sync.retry_due(lambda: wishes)
        assert len(fake.calls) == before and "team-d" not in sync.pending

        # A pending delete of a name registered again (by its last owner) is dropped.
        fake.failing = True
        await store.delete_profile("team-d")
        fake.failing = False
        await store.create_profile(_profile("team-d", "d@example.com"))
        assert "team-d" not in sync.pending  # the ensure that followed succeeded
        sync.pending["team-d"] = (None, 1, 0.0, "x")
        before = len(fake.calls)
        await sync.retry_due(store._wishes)
        assert len(fake.calls) == before and "team-d" not in sync.pending
    finally:
        await _stop(store)


async def test_every_start_ensures_every_namespace_once(tmp_path: Path) -> None:
    """A failure that outlived its gateway (a crash before the retry) is mended by the next
    start: each profile's namespace is ensured once, in the background, and a failure there
    is retried like any other."""
    first = FakeNamespaceRuntime()
    first.failing = True
    store = await _store(tmp_path, _sync(first, retry_seconds=3600))
    await store.create_profile(_profile("team-e", "e@example.com"))
    await store.create_profile(_profile("team-f", "f@example.com"))
    await _stop(store)  # the gateway goes away with both namespaces unmade

    second = FakeNamespaceRuntime()
    second.failing = True
    store = await _store(tmp_path, _sync(second))
    try:
        await _until(lambda: {ns for _, ns, _ in second.calls} == {"team-e", "team-f"})
        second.failing = False
        await _until(lambda: store.namespaces is not None and not store.namespaces.pending)
        assert ("ensure", "team-e", "e@example.com") in second.calls
        assert ("ensure", "team-f", "f@example.com") in second.calls
    finally:
        await _stop(store)

    third = FakeNamespaceRuntime()
    store = await _store(tmp_path, _sync(third))
    try:
        await _until(lambda: len(third.calls) == 2)
        await asyncio.sleep(0.3)  # and nothing more: once per start
        assert sorted(third.calls) == [
            ("ensure", "team-e", "e@example.com"),
            ("ensure", "team-f", "f@example.com"),
        ]
    finally:
        await _stop(store)


async def test_a_runtime_that_cannot_be_built_is_retried(tmp_path: Path) -> None:
    """Building the runtime fails too (no in-cluster config yet, say): same path, retried."""
    fake = FakeNamespaceRuntime()
    builds: list[int] = []

    def build() -> Runtime:
        builds.append(1)
        if len(builds) == 1:
            raise RuntimeError("no kubeconfig (fake)")
        return fake

    sync = NamespaceSync(build, retry_seconds=0.05)
    store = await _store(tmp_path, sync)
    try:
        obj = await store.create_profile(_profile("team-g", "g@example.com"))
        assert _ready(obj) == "False"
        await _until(lambda: not sync.pending)
        assert fake.calls_for("team-g") == [("ensure", "g@example.com")]
        assert len(builds) == 2  # built once it worked, then kept
    finally:
        await _stop(store)


# ---- choosing: only a runtime with namespaces of its own, built lazily ---------------------


def test_namespace_sync_is_built_lazily_for_every_runtime(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The local runtime has namespaces too now (their quotas): a sync is made for it, and its
    runtime built only when a profile needs it, without what starting workloads takes."""
    monkeypatch.setattr(profiles_module, "get_runtime", _refuse_to_build)
    assert isinstance(namespace_sync_for(SimpleNamespace(runtime="local")), NamespaceSync)
    monkeypatch.delenv("SHIPYARD_RUNTIME", raising=False)
    db = Database("sqlite+aiosqlite:///:memory:", "gateway")
    assert isinstance(ProfileStore(db).namespaces, NamespaceSync)  # the quickstart
    built: list[tuple[Any, dict[str, Any]]] = []

    def get_runtime(settings: Any = None, **overrides: Any) -> Runtime:
        built.append((settings, overrides))
        return FakeNamespaceRuntime()

    monkeypatch.setattr(profiles_module, "get_runtime", get_runtime)
    settings = SimpleNamespace(runtime="local", state_dir=tmp_path)
    sync = namespace_sync_for(settings)
    assert built == []
    sync.runtime()
    assert built == [
        (
            settings,
            {
                "workload_env": None,
                "workload_tokens": None,
                "store_endpoint": None,
                "in_cluster": None,
            },
        )
    ]


def _refuse_to_build(*args: Any, **kwargs: Any) -> Runtime:
    raise AssertionError("the runtime must not be built here")


async def test_kubernetes_runtime_is_built_lazily_from_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeNamespaceRuntime()
    built: list[Any] = []

    def get_runtime(settings: Any = None, **overrides: Any) -> Runtime:
        built.append(settings)
        return fake

    monkeypatch.setattr(profiles_module, "get_runtime", get_runtime)
    settings = SimpleNamespace(runtime="kubernetes")
    sync = namespace_sync_for(settings)
    assert sync is not None and built == []  # nothing built (or imported) yet
    assert await sync.ensure("team-h", NamespaceWish("h@example.com"))
    assert await sync.delete("team-h")
    assert built == [settings]  # once
    assert fake.calls == [("ensure", "team-h", "h@example.com"), ("delete", "team-h", None)]


# ---- through the gateway's APIs ----------------------------------------------------------


@pytest.fixture(scope="module")
def namespaces_db() -> Any:
    from tests.conftest import fresh_database

    with fresh_database("shipyard_test_gwns") as url:
        yield url


async def _gateway(
    state: Path, upstream: RunningServer, oidc: OIDCServer, db: str, fake: FakeNamespaceRuntime
) -> tuple[RunningServer, NamespaceSync]:
    settings = gateway_settings(
        state,
        upstream.url,
        db,
        auth_mode="oidc",
        oidc_issuer=oidc.issuer,
        oidc_audiences="shipyard,shipyard-cli",
        runtime="kubernetes",
    )
    app = create_app(settings)
    sync = app.state.gw.store.namespaces = _sync(fake)  # the fake in place of KubernetesRuntime
    server = ServedGateway(app, free_port())
    await server.start()
    return server, sync


async def test_profile_api_with_a_failing_runtime_never_500s(
    tmp_path: Path,
    gateway_state: Path,
    upstream: RunningServer,
    oidc: OIDCServer,
    namespaces_db: str,
) -> None:
    fake = FakeNamespaceRuntime()
    name = f"team-{uuid.uuid4().hex[:8]}"
    admin = {"authorization": f"Bearer {await oidc.id_token('admin@example.com')}"}
    body = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "Profile",
        "metadata": {"name": name},
        "spec": {"owner": {"kind": "User", "name": "second@example.com"}},
    }
    server, sync = await _gateway(gateway_state, upstream, oidc, namespaces_db, fake)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
            fake.failing = True
            r = await c.post("/apis/kubeflow.org/v1/profiles", json=body, headers=admin)
            assert r.status_code == 201, r.text
            assert _ready(r.json()) == "False"
            r = await c.get(f"/apis/kubeflow.org/v1/profiles/{name}", headers=admin)
            assert r.status_code == 200 and _ready(r.json()) == "False"

            fake.failing = False
            await _until(lambda: ("ensure", "second@example.com") in fake.calls_for(name))
            await _until(lambda: not sync.pending)
            r = await c.get(f"/apis/kubeflow.org/v1/profiles/{name}", headers=admin)
            assert _ready(r.json()) == "True"

            # KFAM's profile API goes through the same store.
            kfam_name = f"team-{uuid.uuid4().hex[:8]}"
            kfam_body = {**body, "metadata": {"name": kfam_name}}
            r = await c.post("/kfam/v1/profiles", json=kfam_body, headers=admin)
            assert r.status_code < 300, r.text
            assert fake.calls_for(kfam_name) == [("ensure", "second@example.com")]

            fake.failing = True
            r = await c.delete(f"/apis/kubeflow.org/v1/profiles/{name}", headers=admin)
            assert r.status_code == 200 and r.json()["status"] == "Success"
            assert ("delete", None) in fake.calls_for(name)
            fake.failing = False
            await _until(lambda: not sync.pending)
    finally:
        await server.stop()

    # The next gateway on the same database ensures every profile once at its start.
    restarted = FakeNamespaceRuntime()
    server, _ = await _gateway(gateway_state, upstream, oidc, namespaces_db, restarted)
    try:
        await _until(lambda: ("ensure", "second@example.com") in restarted.calls_for(kfam_name))
        assert restarted.calls_for(name) == []  # deleted: nothing to make
    finally:
        await server.stop()


async def test_a_profiles_quota_reaches_its_namespace_and_only_an_admin_changes_it(
    gateway_state: Path,
    upstream: RunningServer,
    oidc: OIDCServer,
    namespaces_db: str,
) -> None:
    """``spec.resourceQuotaSpec`` goes to the runtime as the namespace's quota; a malformed one
    is a 422 naming the field; the namespace's own admin may neither change it nor delete the
    profile it limits (registering the name again would shed it)."""
    fake = FakeNamespaceRuntime()
    name = f"team-{uuid.uuid4().hex[:8]}"
    owner = "second@example.com"
    admin = {"authorization": f"Bearer {await oidc.id_token('admin@example.com')}"}
    own = {"authorization": f"Bearer {await oidc.id_token(owner)}"}
    path = f"/apis/kubeflow.org/v1/profiles/{name}"
    body: dict[str, Any] = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "Profile",
        "metadata": {"name": name},
        "spec": {
            "owner": {"kind": "User", "name": owner},
            "resourceQuotaSpec": {"hard": {"pods": "2", "requests.cpu": "1"}},
        },
    }
    server, sync = await _gateway(gateway_state, upstream, oidc, namespaces_db, fake)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
            bad = {**body, "spec": {**body["spec"], "resourceQuotaSpec": {"hard": {"cpu": "x"}}}}
            r = await c.post("/apis/kubeflow.org/v1/profiles", json=bad, headers=admin)
            assert r.status_code == 422, r.text
            assert r.json()["message"] == (
                "spec.resourceQuotaSpec.hard[cpu]: 'x' is not a valid quantity "
                "(e.g. 512Mi, 1G, 250m)"
            )
            assert (await c.get(path, headers=admin)).status_code == 404

            r = await c.post("/apis/kubeflow.org/v1/profiles", json=body, headers=admin)
            assert r.status_code == 201, r.text
            assert fake.quotas[name] == {"pods": "2", "requests.cpu": "1"}

            # The owner: the same quota again is fine (kubectl apply of the whole object) ...
            same = {
                "metadata": {"labels": {"team": "q"}},
                "spec": {"resourceQuotaSpec": body["spec"]["resourceQuotaSpec"]},
            }
            r = await c.patch(path, json=same, headers=own)
            assert r.status_code == 200, r.text
            # ... another, or none, is not; and nor is deleting the profile.
            for quota in ({"hard": {"pods": "200"}}, None):
                r = await c.patch(path, json={"spec": {"resourceQuotaSpec": quota}}, headers=own)
                assert r.status_code == 403, r.text
                assert r.json()["message"] == (
                    f'User "{owner}" cannot change the resource quota of '
                    f'profiles.kubeflow.org "{name}"'
                )
            r = await c.delete(path, headers=own)
            assert r.status_code == 403, r.text
            assert r.json()["message"] == (
                f'User "{owner}" cannot delete profiles.kubeflow.org "{name}": its resource '
                "quota is stricter than the registration quota; ask a cluster admin"
            )
            r = await c.get(path, headers=admin)
            assert r.json()["spec"]["resourceQuotaSpec"] == {
                "hard": {"pods": "2", "requests.cpu": "1"}
            }
            assert fake.quotas[name] == {"pods": "2", "requests.cpu": "1"}

            # A cluster admin changes it (a merge patch: null drops a name), then takes it off;
            # then the owner may delete.
            hard = {"pods": "5", "requests.cpu": None}
            r = await c.patch(
                path, json={"spec": {"resourceQuotaSpec": {"hard": hard}}}, headers=admin
            )
            assert r.status_code == 200, r.text
            assert fake.quotas[name] == {"pods": "5"}
            r = await c.patch(path, json={"spec": {"resourceQuotaSpec": None}}, headers=admin)
            assert r.status_code == 200, r.text
            assert fake.quotas[name] is None
            assert (await c.delete(path, headers=own)).status_code == 200
            assert not sync.pending
    finally:
        await server.stop()


async def test_a_self_registered_profile_is_held_to_the_registration_quota(
    gateway_state: Path,
    upstream: RunningServer,
    oidc: OIDCServer,
    namespaces_db: str,
) -> None:
    """A person registering their own profile (a Profile, or the dashboard's registration
    flow) gets the registration quota (default ``pods=20``): their own may be stricter, never
    looser. They may delete it while registering again would give it back; a cluster admin
    registering for someone sets what they like."""
    fake = FakeNamespaceRuntime()
    user = "user@example.com"  # a person of the test provider, in this module's own database
    ns = namespace_for_user(user)
    own = {"authorization": f"Bearer {await oidc.id_token(user)}"}
    admin = {"authorization": f"Bearer {await oidc.id_token('admin@example.com')}"}
    profiles, path = "/apis/kubeflow.org/v1/profiles", f"/apis/kubeflow.org/v1/profiles/{ns}"

    def profile(name: str, owner: str, hard: dict[str, str] | None = None) -> dict[str, Any]:
        spec: dict[str, Any] = {"owner": {"kind": "User", "name": owner}}
        if hard is not None:
            spec["resourceQuotaSpec"] = {"hard": hard}
        return {"metadata": {"name": name}, "spec": spec}

    server, _ = await _gateway(gateway_state, upstream, oidc, namespaces_db, fake)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
            looser = profile(ns, user, {"pods": "100", "limits.memory": "4Gi"})
            r = await c.post(profiles, json=looser, headers=own)
            assert r.status_code == 403, r.text
            assert r.json()["message"] == (
                f'User "{user}" cannot register a profile with a resource quota above the '
                "registration quota: hard[pods] 100 is more than 20 (ask a cluster admin)"
            )
            assert (await c.get(path, headers=admin)).status_code == 404

            stricter = profile(ns, user, {"pods": "5", "limits.memory": "4Gi"})
            r = await c.post(profiles, json=stricter, headers=own)
            assert r.status_code == 201, r.text
            hard = {"pods": "5", "limits.memory": "4Gi"}
            assert r.json()["spec"]["resourceQuotaSpec"] == {"hard": hard}
            assert fake.quotas[ns] == hard
            r = await c.delete(path, headers=own)  # registering again would loosen it
            assert r.status_code == 403, r.text
            assert "stricter than the registration quota" in r.json()["message"]
            assert (await c.delete(path, headers=admin)).status_code == 200

            r = await c.post("/api/workgroup/create", json={}, headers=own)
            assert r.status_code == 200, r.text
            assert r.json()["namespace"] == ns
            r = await c.get(path, headers=own)
            assert r.json()["spec"]["resourceQuotaSpec"] == {"hard": {"pods": "20"}}
            assert fake.quotas[ns] == {"pods": "20"}
            # The ways out a tenant would try: lifting it, or shedding it and registering
            # again through KFAM's API with a looser one.
            lift = {"spec": {"resourceQuotaSpec": {"hard": {"pods": "1000"}}}}
            assert (await c.patch(path, json=lift, headers=own)).status_code == 403
            assert (await c.delete(path, headers=own)).status_code == 200  # nothing shed
            r = await c.post("/kfam/v1/profiles", json=looser, headers=own)
            assert r.status_code == 403, r.text
            assert "above the registration quota: hard[pods] 100 is more than 20" in r.text
            assert (await c.get(path, headers=admin)).status_code == 404

            other = f"team-{uuid.uuid4().hex[:8]}"
            r = await c.post(profiles, json=profile(other, user), headers=admin)
            assert r.status_code == 201, r.text
            assert "resourceQuotaSpec" not in r.json()["spec"] and fake.quotas[other] is None
    finally:
        await server.stop()


def test_the_registration_quota_setting_is_checked_with_its_name(
    gateway_state: Path, upstream: RunningServer, namespaces_db: str
) -> None:
    settings = gateway_settings(
        gateway_state, upstream.url, namespaces_db, registration_quota="pods=4, limits.cpu=2"
    )
    assert settings.registration_hard == {"pods": "4", "limits.cpu": "2"}
    none = gateway_settings(gateway_state, upstream.url, namespaces_db, registration_quota="")
    assert none.registration_hard == {}
    for bad, says in (
        ("pods", "'pods' is not name=quantity (e.g. pods=20)"),
        ("pods=lots", "SHIPYARD_REGISTRATION_QUOTA[pods]: 'lots' is not a valid quantity"),
    ):
        with pytest.raises(ValueError, match=re.escape(says)):
            gateway_settings(gateway_state, upstream.url, namespaces_db, registration_quota=bad)
