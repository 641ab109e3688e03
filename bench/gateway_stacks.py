"""The gateway's proxy on another HTTP client stack, for bench/bench_gateway.py to compare.

    python bench/gateway_stacks.py {pool,httpx,aiohttp}

runs ``python -m gateway`` with ``gateway.gateway.UpstreamPool`` replaced by an adapter over
httpx (httpcore underneath) or aiohttp. An adapter offers what the proxy uses of the hand-written
pool (gateway/upstream.py): ``request`` returning a response with ``status``, lowercased raw
``headers``, ``small_body``, ``read_chunk``, ``long_running``, ``abort`` and ``close``, and the
same exceptions. Each is set up the way the proxy needs it (streamed, no redirects, no
decompression, 512 connections and 128 kept alive per host, the same timeouts) and each is
what the proxy would run if that stack replaced the pool; the ``http+sandbox://`` endpoints
of sandboxed servers are left out (the bench's upstreams are plain HTTP).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.upstream import Body, UpstreamError, UpstreamTimeout  # noqa: E402


def _finish_later(close: Any) -> None:
    """Run a stack's async close from the proxy's synchronous ``close``."""
    task = asyncio.ensure_future(close())
    _pending.add(task)
    task.add_done_callback(_pending.discard)


_pending: set[asyncio.Future[Any]] = set()


class HttpxResponse:
    def __init__(self, resp: Any) -> None:
        self._resp = resp
        self.status = resp.status_code
        self.headers = [(k.lower(), v) for k, v in resp.headers.raw]
        self._chunks: AsyncIterator[bytes] = resp.aiter_raw()

    def long_running(self) -> None:
        """httpx's pool has no separate count for streams."""

    async def small_body(self, limit: int) -> bytes | None:
        length = self._resp.headers.get("content-length")
        if length is None or int(length) > limit:
            return None
        return b"".join([chunk async for chunk in self._chunks])

    async def read_chunk(self) -> bytes | None:
        import httpx

        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            return None
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(str(exc)) from None
        except httpx.HTTPError as exc:
            raise UpstreamError(str(exc)) from None

    def abort(self) -> None:
        _finish_later(self._resp.aclose)

    def close(self) -> None:
        if not self._resp.is_closed:
            _finish_later(self._resp.aclose)


class HttpxUpstream:
    """The proxy's upstream client on one ``httpx.AsyncClient``."""

    def __init__(self, connect_timeout: float = 5.0, read_timeout: float = 300.0) -> None:
        import httpx

        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            # Idle connections dropped before uvicorn's 5-s keep-alive timeout: at httpx's
            # default (also 5 s) a reused connection the upstream was closing meanwhile
            # failed a request now and then (502), as the first run of this bench showed.
            limits=httpx.Limits(
                max_connections=512, max_keepalive_connections=128, keepalive_expiry=4.0
            ),
            follow_redirects=False,
        )

    async def request(
        self,
        method: str,
        base_url: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: Body = None,
        content_length: int | None = None,
    ) -> HttpxResponse:
        import httpx

        if content_length is not None:
            headers = [*headers, (b"content-length", str(content_length).encode())]
        request = self.client.build_request(
            method, base_url + target.decode("latin-1"), headers=headers, content=body
        )
        try:
            return HttpxResponse(await self.client.send(request, stream=True))
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(str(exc)) from None
        except httpx.HTTPError as exc:
            raise UpstreamError(str(exc)) from None

    async def aclose(self) -> None:
        await self.client.aclose()


class AiohttpResponse:
    def __init__(self, resp: Any) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers = [(k.lower(), v) for k, v in resp.raw_headers]

    def long_running(self) -> None:
        """aiohttp's connector has no separate count for streams."""

    async def small_body(self, limit: int) -> bytes | None:
        length = self._resp.content_length
        if length is None or length > limit:
            return None
        return bytes(await self._resp.read())

    async def read_chunk(self) -> bytes | None:
        import aiohttp

        try:
            chunk = await self._resp.content.readany()
        except TimeoutError as exc:
            raise UpstreamTimeout(str(exc)) from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(str(exc)) from None
        return bytes(chunk) or None

    def abort(self) -> None:
        self._resp.close()

    def close(self) -> None:
        self._resp.release()


class AiohttpUpstream:
    """The proxy's upstream client on one ``aiohttp.ClientSession``."""

    def __init__(self, connect_timeout: float = 5.0, read_timeout: float = 300.0) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._session: Any = None

    def _client(self) -> Any:
        import aiohttp

        if self._session is None:  # made in the running loop
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=512, limit_per_host=512, keepalive_timeout=4),
                timeout=aiohttp.ClientTimeout(
                    sock_connect=self.connect_timeout, sock_read=self.read_timeout
                ),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            )
        return self._session

    async def request(
        self,
        method: str,
        base_url: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: Body = None,
        content_length: int | None = None,
    ) -> AiohttpResponse:
        import aiohttp
        from multidict import CIMultiDict
        from yarl import URL

        out = CIMultiDict((k.decode("latin-1"), v.decode("latin-1")) for k, v in headers)
        if content_length is not None:
            out["content-length"] = str(content_length)
        try:
            resp = await self._client().request(
                method,
                URL(base_url + target.decode("latin-1"), encoded=True),
                headers=out,
                data=body,
                allow_redirects=False,
            )
        except TimeoutError as exc:
            raise UpstreamTimeout(str(exc)) from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(str(exc)) from None
        return AiohttpResponse(resp)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


STACKS: dict[str, Any] = {"httpx": HttpxUpstream, "aiohttp": AiohttpUpstream}


def main() -> None:
    import gateway.gateway
    from gateway.__main__ import main as run_gateway

    stack = sys.argv[1]
    if stack != "pool":
        gateway.gateway.UpstreamPool = STACKS[stack]  # type: ignore[attr-defined,misc]
    run_gateway()


if __name__ == "__main__":
    main()
