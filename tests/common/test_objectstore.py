"""services.common.objectstore against a real SeaweedFS (the embedded one `shipyard up` runs)."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import psutil
import pytest

from services.common.objectstore import (
    CredentialsRefused,
    ObjectNotFound,
    ObjectStore,
    StoreUnreachable,
)
from shipyard.seaweedfs import PORT_FLAGS
from tests.conftest import RunningSeaweedFS, free_port

MiB = 1024 * 1024


def _key(name: str) -> str:
    return f"test/{uuid.uuid4().hex[:8]}/{name}"


async def _chunks(total: int, size: int, seed: bytes) -> AsyncIterator[bytes]:
    block = hashlib.sha256(seed).digest() * (size // 32)
    sent = 0
    while sent < total:
        piece = block[: min(size, total - sent)]
        sent += len(piece)
        yield piece


async def test_put_get_stream_64mib_bounded_memory(seaweedfs: RunningSeaweedFS) -> None:
    """64 MiB goes up as a multipart upload and comes back intact, while Python's heap never
    holds more than a few parts' worth of it."""
    key, total = _key("big.bin"), 64 * MiB
    expected = hashlib.sha256()
    async for chunk in _chunks(total, MiB, b"x"):
        expected.update(chunk)
    async with ObjectStore(seaweedfs.config) as store:
        tracemalloc.start()
        try:
            info = await store.put_stream(key, _chunks(total, MiB, b"x"))
            _, peak_put = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            got, size = hashlib.sha256(), 0
            async for chunk in store.get_stream(key):
                got.update(chunk)
                size += len(chunk)
            _, peak_get = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert info.size == total and size == total
        assert info.etag.endswith("-8")  # 8 parts of 8 MiB: it was a multipart upload
        assert got.hexdigest() == expected.hexdigest()
        # A few copies of one part (our buffer, the request's body, aiohttp's), never the
        # object: the peak does not grow with the object's size.
        assert peak_put < 5 * store.part_size < total, f"put peaked at {peak_put / MiB:.1f} MiB"
        assert peak_get < 16 * MiB, f"get peaked at {peak_get / MiB:.1f} MiB"
        assert (await store.head(key)).size == total
        await store.delete(key)


async def test_presigned_url_downloads_with_plain_http(seaweedfs: RunningSeaweedFS) -> None:
    key, data = _key("model.txt"), os.urandom(1000)

    async def one() -> AsyncIterator[bytes]:
        yield data

    async with ObjectStore(seaweedfs.config) as store:
        await store.put_stream(key, one())
        url = await store.presigned_get_url(key, expires_in=60)
    async with httpx.AsyncClient() as http:
        assert (await http.get(url)).content == data
        tampered = url.replace("X-Amz-Expires=60", "X-Amz-Expires=600")
        assert (await http.get(tampered)).status_code == 403
        unsigned = url.split("?", 1)[0]
        assert (await http.get(unsigned)).status_code in (401, 403)  # no anonymous reads


async def test_list_and_delete(seaweedfs: RunningSeaweedFS) -> None:
    prefix = _key("")

    async def small(text: str) -> AsyncIterator[bytes]:
        yield text.encode()

    async with ObjectStore(seaweedfs.config) as store:
        for name in ("b", "a", "sub/c"):
            await store.put_stream(prefix + name, small(name))
        listed = [(o.key, o.size) async for o in store.list(prefix)]
        assert listed == [(prefix + "a", 1), (prefix + "b", 1), (prefix + "sub/c", 5)]
        assert [o.key async for o in store.list(prefix + "sub/")] == [prefix + "sub/c"]
        await store.delete(prefix + "a")
        with pytest.raises(ObjectNotFound, match="a'"):
            await store.head(prefix + "a")
        assert [o.key async for o in store.list(prefix)] == [prefix + "b", prefix + "sub/c"]
        assert await store.ensure_bucket() is False  # it exists: nothing to do


async def test_wrong_credentials_refused_clearly(seaweedfs: RunningSeaweedFS) -> None:
    config = replace(seaweedfs.config, secret_access_key="not-the-secret")
    async with ObjectStore(config, max_attempts=1) as store:
        with pytest.raises(CredentialsRefused) as info:
            await store.ensure_bucket()
    message = str(info.value)
    assert config.endpoint in message and "'mlpipeline'" in message
    assert "SHIPYARD_S3_SECRET_ACCESS_KEY" in message
    assert "not-the-secret" not in message


async def test_unreachable_endpoint_fails_clearly(seaweedfs: RunningSeaweedFS) -> None:
    config = replace(seaweedfs.config, endpoint=f"http://127.0.0.1:{free_port()}")
    async with ObjectStore(config, max_attempts=1, connect_timeout=1) as store:
        with pytest.raises(StoreUnreachable) as info:
            await store.ensure_bucket()
    assert config.endpoint in str(info.value) and "SHIPYARD_S3_ENDPOINT" in str(info.value)


def test_embedded_seaweedfs_listens_only_on_its_ports(seaweedfs: RunningSeaweedFS) -> None:
    """`weed server` opens listeners it does not name (8080, 8181, 8111, gRPC at +10000...):
    every TCP listener of its process tree is one we pinned, on loopback."""
    given = set(seaweedfs.ports.values())
    assert len(given) == len(PORT_FLAGS)
    root = psutil.Process(seaweedfs.pid)
    listening = {
        (c.laddr.ip, c.laddr.port)
        for p in (root, *root.children(recursive=True))
        for c in p.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN or (c.type == 2 and not c.raddr)  # TCP listen, UDP
    }
    assert {port for _, port in listening} <= given, sorted(listening)
    assert {ip for ip, _ in listening} == {"127.0.0.1"}
    assert not {port for _, port in listening} & {8080, 8181, 8111, 8333, 9333, 18080, 8888}
    assert {port for _, port in listening} == given  # and each pinned port is really in use
