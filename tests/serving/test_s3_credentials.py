"""KServe's S3 credentials for a storageUri: core/v1 Secrets and ServiceAccounts through the
API, and a model served from a second, "external" SeaweedFS with its own keys."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.fetch import AllowedHosts
from services.common.objectstore import ObjectStore, S3Config
from services.common.settings import SINGLE_USER_NAMESPACE as NS
from services.serving.credentials import S3Credentials
from services.serving.modelcache import (
    DownloadPolicy,
    ModelCache,
    ModelSourceError,
    cache_prefix,
    uri_digest,
)
from tests.conftest import ADMIN_USER, crash_service, create_profile, start_service_again

from .conftest import ISVC_PATH, assert_v2_predicts, isvc, ready, train_sklearn, wait_isvc

SECRETS = f"/api/v1/namespaces/{NS}/secrets"
ACCOUNTS = f"/api/v1/namespaces/{NS}/serviceaccounts"
BUCKET = "external-models"
SAMPLES = [[5.0, 3.4, 1.5, 0.2], [5.9, 2.8, 4.3, 1.3], [6.6, 3.0, 5.6, 2.0], [6.1, 2.9, 4.6, 1.4]]


def unique(name: str) -> str:
    return f"{name}-{os.urandom(4).hex()}"


# ----------------------------------------------------------------------------- fixtures
@dataclass
class ExternalS3:
    """A second SeaweedFS, not the platform's: its own keys, its own bucket."""

    config: S3Config

    @property
    def hostport(self) -> str:
        return self.config.endpoint.removeprefix("http://")


@pytest.fixture(scope="module")
def external_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExternalS3]:
    from shipyard.seaweedfs import running

    with running(tmp_path_factory.mktemp("external-s3"), "external-s3", BUCKET) as (embedded, _):
        yield ExternalS3(embedded.config)


async def put(config: S3Config, key: str, data: bytes) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield data

    async with ObjectStore(config) as store:
        await store.put_stream(key, chunks())


def credentials(config: S3Config, *, secret_key: str | None = None) -> S3Credentials:
    return S3Credentials(
        endpoint=config.endpoint,
        region=config.region,
        verify_tls=True,
        anonymous=False,
        secret=f"{NS}/s3",
        access_key_id=config.access_key_id,
        secret_access_key=secret_key or config.secret_access_key,
    )


@pytest.fixture
async def platform_store(seaweedfs: Any) -> AsyncIterator[ObjectStore]:
    """The platform's own store (where copies of external models are kept)."""
    async with ObjectStore(seaweedfs.config) as store:
        yield store


def make_cache(platform: ObjectStore, allow: str, *, own_endpoint: bool = False) -> ModelCache:
    """A cache keeping its copies in ``platform``; ``own_endpoint``: it knows that store's
    endpoint as its own (the platform-bucket rule applies to Secrets naming it)."""

    async def objects() -> ObjectStore:
        return platform

    return ModelCache(
        objects,
        platform.bucket,
        DownloadPolicy(allowed_hosts=AllowedHosts.parse(allow)),
        platform_endpoint=platform.config.endpoint if own_endpoint else None,
    )


async def cache_listing(config: S3Config, cache_id: str) -> list[str]:
    """The objects of ``cache_id``'s copies in the namespace's cache area."""
    async with ObjectStore(config) as store:
        prefix = f"models/{NS}/.cache/{uri_digest(cache_id)}/"
        return [info.key async for info in store.list(prefix)]


async def stored(store: ObjectStore, key: str) -> bytes:
    return b"".join([chunk async for chunk in store.get_stream(key)])


async def external_model(
    external_s3: ExternalS3, platform_store: ObjectStore, content: bytes
) -> tuple[str, ModelCache]:
    """``content`` as a model file in the external store under a fresh prefix, and a cache
    keeping its copies in ``platform_store`` that may reach the external store: (key, cache)."""
    key = f"{unique('iris')}/model.joblib"
    await put(external_s3.config, key, content)
    return key, make_cache(platform_store, external_s3.hostport)


# ----------------------------------------------------------------------------- model cache
async def test_fetch_external_s3_with_secret_credentials(
    external_s3: ExternalS3, platform_store: ObjectStore
) -> None:
    key, cache = await external_model(external_s3, platform_store, b"model bytes")
    uri = f"s3://{BUCKET}/{key.rsplit('/', 1)[0]}"
    model = await cache.fetch(NS, uri, credentials(external_s3.config))
    # Copied into the namespace's cache area of the platform's bucket, keyed by endpoint and
    # URI: the model server reaches only the platform's store.
    prefix = cache_prefix(NS, f"{external_s3.config.endpoint} {uri}", model.version)
    assert [(o.key, o.path) for o in model.objects] == [
        (f"{prefix}files/model.joblib", "model.joblib")
    ]
    assert await stored(platform_store, model.objects[0].key) == b"model bytes"
    # Cached by endpoint, URI and ETag: found again without a download.
    assert await cache.fetch(NS, uri, credentials(external_s3.config)) == model
    assert cache.downloads == 1


async def test_fetch_external_s3_wrong_credentials_names_the_problem(
    external_s3: ExternalS3, platform_store: ObjectStore
) -> None:
    key, cache = await external_model(external_s3, platform_store, b"x")
    wrong = "not-the-secret-key-" + os.urandom(8).hex()
    with pytest.raises(ModelSourceError) as info:
        await cache.fetch(
            NS, f"s3://{BUCKET}/{key}", credentials(external_s3.config, secret_key=wrong)
        )
    message = str(info.value)
    assert "refused the credentials" in message and f"Secret {NS}/s3" in message
    assert wrong not in message and external_s3.config.secret_access_key not in message


async def test_fetch_external_s3_loopback_endpoint_refused_without_allow(
    external_s3: ExternalS3, platform_store: ObjectStore
) -> None:
    cache = make_cache(platform_store, "")
    with pytest.raises(ModelSourceError, match="loopback"):
        await cache.fetch(NS, f"s3://{BUCKET}/any/model", credentials(external_s3.config))


async def test_fetch_platform_bucket_with_credentials_keeps_namespace_areas(
    platform_store: ObjectStore,
) -> None:
    """The platform's own store and bucket, even with its own root keys given in a Secret:
    another namespace's area stays out of reach; the namespace's own area works, in place."""
    platform = platform_store.config
    cache = make_cache(platform_store, "", own_endpoint=True)
    with pytest.raises(ModelSourceError, match="outside namespace"):
        await cache.fetch(
            NS, f"s3://{platform.bucket}/models/someone-else/m", credentials(platform)
        )
    key = f"models/{NS}/{unique('own')}/model.joblib"
    await put(platform, key, b"own")
    uri = f"s3://{platform.bucket}/{key}"
    model = await cache.fetch(NS, uri, credentials(platform))
    assert model.file == "model.joblib" and [o.key for o in model.objects] == [key]
    assert cache.downloads == 0


# ----------------------------------------------------------------------------- the API
@pytest.fixture(scope="module")
def api(platform: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=platform.gateway_url, timeout=30) as client:
        yield client


def secret_body(name: str, **fields: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, **fields}


def causes(r: httpx.Response) -> dict[str, str]:
    assert r.status_code == 422, r.text
    return {c["field"]: c["message"] for c in r.json()["details"]["causes"]}


async def outbox_payloads(pg_url: str, kind: str) -> list[bytes]:
    import asyncpg

    conn = await asyncpg.connect(pg_url.replace("+asyncpg", ""))
    try:
        rows = await conn.fetch("SELECT payload FROM serving.outbox WHERE kind = $1", kind)
    finally:
        await conn.close()
    return [bytes(r["payload"]) for r in rows]


def test_create_secret_string_data_merged_and_never_returned_or_published(
    api: httpx.Client, pg_url: str
) -> None:
    name = unique("creds")
    value = "s3cr3t-" + os.urandom(8).hex()
    body = secret_body(
        name,
        data={"AWS_ACCESS_KEY_ID": base64.b64encode(b"key-id").decode()},
        stringData={"AWS_SECRET_ACCESS_KEY": value},
    )
    r = api.post(SECRETS, json=body)
    assert r.status_code == 201, r.text
    created = r.json()
    assert "stringData" not in created
    assert created["type"] == "Opaque"
    assert base64.b64decode(created["data"]["AWS_SECRET_ACCESS_KEY"]).decode() == value
    got = api.get(f"{SECRETS}/{name}").json()
    assert got["data"] == created["data"] and "stringData" not in got
    # stringData wins over the same key in data, on update too.
    got["stringData"] = {"AWS_ACCESS_KEY_ID": "new-id"}
    updated = api.put(f"{SECRETS}/{name}", json=got).json()
    assert base64.b64decode(updated["data"]["AWS_ACCESS_KEY_ID"]) == b"new-id"
    # A watch from the start gets the current object with its data, as Kubernetes'.
    with api.stream(
        "GET",
        SECRETS,
        params={"watch": "1", "timeoutSeconds": "1", "fieldSelector": f"metadata.name={name}"},
    ) as watch:
        lines = [line for line in watch.iter_lines() if line]
    assert any(created["data"]["AWS_SECRET_ACCESS_KEY"] in line for line in lines), lines
    # The events (outbox rows, which are what NATS carries) hold no value.
    encoded = base64.b64encode(value.encode())
    payloads = asyncio.run(outbox_payloads(pg_url, "Secret"))
    assert any(name.encode() in p for p in payloads)
    assert not any(value.encode() in p or encoded in p for p in payloads)
    api.delete(f"{SECRETS}/{name}")


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"data": {"k": "not base64!"}}, "data[k]", "base64"),
        ({"data": {"bad/key": "eA=="}}, "data[bad/key]", "alphanumeric"),
        ({"stringData": {"..": "x"}}, "stringData[..]", "alphanumeric"),
        ({"stringData": {"big": "x" * (1024 * 1024 + 1)}}, "data", "1048576 bytes"),
        ({"immutable": "yes"}, "immutable", "true or false"),
    ],
)
def test_create_secret_invalid_422(
    api: httpx.Client, fields: dict[str, Any], field: str, words: str
) -> None:
    found = causes(api.post(SECRETS, json=secret_body(unique("bad"), **fields)))
    assert field in found and words in found[field], found
    assert "not base64!" not in str(found)


def test_update_immutable_secret_and_type_refused(api: httpx.Client) -> None:
    name = unique("frozen")
    r = api.post(SECRETS, json=secret_body(name, stringData={"a": "1"}, immutable=True))
    assert r.status_code == 201, r.text
    found = causes(
        api.patch(
            f"{SECRETS}/{name}",
            json={"stringData": {"a": "2"}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
    )
    assert "immutable" in found["data"]
    found = causes(
        api.patch(
            f"{SECRETS}/{name}",
            json={"type": "kubernetes.io/tls"},
            headers={"Content-Type": "application/merge-patch+json"},
        )
    )
    assert "immutable" in found["type"]
    api.delete(f"{SECRETS}/{name}")


def test_create_service_account(api: httpx.Client) -> None:
    name = unique("sa")
    body = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": name},
        "secrets": [{"name": "s3"}],
        "imagePullSecrets": [{"name": "registry"}],
        "automountServiceAccountToken": False,
    }
    r = api.post(ACCOUNTS, json=body)
    assert r.status_code == 201, r.text
    got = api.get(f"{ACCOUNTS}/{name}").json()
    assert got["secrets"] == [{"name": "s3"}] and got["automountServiceAccountToken"] is False
    api.delete(f"{ACCOUNTS}/{name}")
    bad = {**body, "secrets": [{"name": "Not_A_Name"}]}
    assert "secrets[0].name" in causes(api.post(ACCOUNTS, json=bad))


def test_create_inferenceservice_s3_annotations_belong_on_the_secret_422(
    api: httpx.Client,
) -> None:
    body = isvc("annotated", {"sklearn": {"storageUri": f"s3://mlpipeline/models/{NS}/m"}})
    body["metadata"]["annotations"] = {"serving.kserve.io/s3-endpoint": "minio.example:9000"}
    found = causes(api.post(ISVC_PATH, json=body))
    assert "from the Secret" in found["metadata.annotations[serving.kserve.io/s3-endpoint]"]


# ----------------------------------------------------------------------------- end to end
def _failed_with(words: str) -> Any:
    def failed(obj: dict[str, Any]) -> bool:
        conds = (obj.get("status") or {}).get("conditions") or []
        return any(
            c["type"] == "Ready" and c["status"] == "False" and words in c.get("message", "")
            for c in conds
        )

    return failed


def test_inferenceservice_from_external_s3_with_service_account(
    api: httpx.Client, platform: Any, seaweedfs: Any, external_s3: ExternalS3, tmp_path: Path
) -> None:
    """KServe's way: Secret (stringData, s3-* annotations) + ServiceAccount + serviceAccountName.
    The model on another S3 server becomes Ready and answers V2 with its own predictions; wrong
    keys and a missing ServiceAccount give failed conditions that name the problem, never a
    value."""
    model = train_sklearn(tmp_path / "iris")
    prefix = unique("iris")
    asyncio.run(
        put(
            external_s3.config,
            f"{prefix}/model.joblib",
            (tmp_path / "iris" / "model.joblib").read_bytes(),
        )
    )
    serving = crash_service(platform, "serving")
    original_env = dict(serving.env)
    serving.env = {**original_env, "SHIPYARD_MODEL_DOWNLOAD_ALLOWED_HOSTS": external_s3.hostport}
    start_service_again(serving)
    annotations = {
        "serving.kserve.io/s3-endpoint": external_s3.hostport,
        "serving.kserve.io/s3-usehttps": "0",
        "serving.kserve.io/s3-region": external_s3.config.region,
    }
    wrong = "wrong-" + os.urandom(8).hex()
    secrets = {
        "ext-s3": external_s3.config.secret_access_key,
        "ext-s3-wrong": wrong,
    }
    names = ("iris-ext", "iris-ext-wrong", "iris-ext-nosa")
    try:
        for secret, key in secrets.items():
            body = secret_body(
                secret,
                stringData={
                    "AWS_ACCESS_KEY_ID": external_s3.config.access_key_id,
                    "AWS_SECRET_ACCESS_KEY": key,
                },
            )
            body["metadata"]["annotations"] = annotations
            assert api.post(SECRETS, json=body).status_code == 201
            sa: dict[str, Any] = {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": secret},
            }
            sa["secrets"] = [{"name": secret}]
            assert api.post(ACCOUNTS, json=sa).status_code == 201
        uri = f"s3://{BUCKET}/{prefix}"
        for name, account in zip(names, ("ext-s3", "ext-s3-wrong", "no-such-sa"), strict=True):
            body = isvc(
                name,
                {
                    "model": {
                        "modelFormat": {"name": "sklearn"},
                        "protocolVersion": "v2",
                        "storageUri": uri,
                    },
                    "serviceAccountName": account,
                },
            )
            r = api.post(ISVC_PATH, json=body)
            assert r.status_code == 201, r.text

        obj = wait_isvc(api, "iris-ext", ready, timeout=90)
        assert_v2_predicts(api, "iris-ext", model, SAMPLES)

        failed = wait_isvc(
            api, "iris-ext-wrong", _failed_with("refused the credentials"), timeout=60
        )
        nosa = wait_isvc(api, "iris-ext-nosa", _failed_with("no-such-sa"), timeout=60)
        assert "not found" in str(nosa["status"])
        for shown in (obj, failed, nosa):
            text = str(shown)
            assert wrong not in text and external_s3.config.secret_access_key not in text
            assert external_s3.config.secret_access_key not in str(shown.get("status"))
        # The workload's environment holds no credentials either.
        spec_dir = Path(platform.state_dir)
        for path in spec_dir.rglob("*.json"):
            try:
                content = path.read_text()
            except (OSError, UnicodeDecodeError):
                continue
            assert external_s3.config.secret_access_key not in content, path
        # The model server got it from the copy in the namespace's cache area of the
        # platform's bucket (it reaches no other store).
        cache_id = f"{external_s3.config.endpoint} {uri}"
        copies = asyncio.run(cache_listing(seaweedfs.config, cache_id))
        assert any(k.endswith("/files/model.joblib") for k in copies), copies
    finally:
        for name in names:
            api.delete(f"{ISVC_PATH}/{name}")
        for secret in secrets:
            api.delete(f"{SECRETS}/{secret}")
            api.delete(f"{ACCOUNTS}/{secret}")
        serving = crash_service(platform, "serving")
        serving.env = original_env
        start_service_again(serving)


def test_secret_of_another_namespace_refused(trusted_header_platform: Any) -> None:
    """A tenant never reads (or lists) another namespace's Secrets; its own, yes."""
    platform = trusted_header_platform

    def client(user: str) -> httpx.Client:
        return httpx.Client(
            base_url=platform.gateway_url, headers={"kubeflow-userid": user}, timeout=10
        )

    with (
        client(ADMIN_USER) as admin,
        client("alice@example.com") as alice,
        client("bob@example.com") as bob,
    ):
        create_profile(admin, "team-a", owner="alice@example.com")
        create_profile(admin, "team-b", owner="bob@example.com")
        path = "/api/v1/namespaces/team-a/secrets"
        r = alice.post(path, json=secret_body("keys", stringData={"AWS_SECRET_ACCESS_KEY": "v"}))
        assert r.status_code == 201, r.text
        assert "stringData" not in r.json()
        assert alice.get(f"{path}/keys").status_code == 200
        assert bob.get(f"{path}/keys").status_code == 403
        assert bob.get(path).status_code == 403
        assert bob.get("/api/v1/secrets").status_code == 403
        assert bob.get(path, params={"watch": "1", "timeoutSeconds": "1"}).status_code == 403
        assert bob.delete(f"{path}/keys").status_code == 403
        assert bob.get("/api/v1/namespaces/team-a/serviceaccounts").status_code == 403
        assert bob.get("/api/v1/namespaces/team-b/secrets").status_code == 200
