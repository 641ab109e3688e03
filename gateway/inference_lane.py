"""The inference lane: model and graph requests relayed by the gateway's HTTP protocol itself,
with no ASGI task, scope, ``receive`` or ``send`` per request.

Profiled (docs/benchmarks.md, "the gateway's inference path"), uvicorn's per-request
machinery (a task per request, the ASGI messages, the response cycle) cost most of the
gateway's CPU on a proxied V2 infer: a bare uvicorn proxy already spent 155-178 us of the
175-211 us the gateway did; authentication, authorization and routing were about 15 us. A
request whose every decision is already in memory takes this lane instead:

* it is admitted when its head is complete (``GatewayHttpProtocol.on_headers_complete``):
  a POST (an inference call; reads go the ASGI way) to an InferenceService's or
  InferenceGraph's data-plane path (``routes.resolve``) on a plain Host (not a notebook's
  origin, nothing under the ingress domain), a Content-Length body of at most
  ``SMALL_BODY`` bytes, a caller that ``Authenticator.authenticate_now`` names, a grant
  from ``authz`` (whose decisions are cached per profile snapshot), a live endpoint in the
  route table, and a kept-alive upstream connection with a free slot
  (``UpstreamPool.take_idle``);
* on the request's last byte its head and body go upstream in one write, with the headers
  ``ProxyFastPath`` would send (``Gateway.upstream_headers``: none of the caller's
  credentials);
* the upstream connection calls back (``_Connection.on_progress``) as the response arrives.
  A small response is written to the client whole, with the sandbox headers, in one write;
  a larger or streamed one (server-sent events) goes on in a task, chunk by chunk, with flow
  control both ways and without counting against the endpoint's slots, as in
  ``proxy.relay_response``.

Everything else (a cookie session, a token not verified yet, a refusal, a model scaled to
zero, no idle upstream connection, a large upload, a request pipelined behind another) goes
the ASGI way, ``gateway.fastpath.ProxyFastPath``, unchanged. Admission has no side effects,
so declining is always safe, and the answers are the same either way
(tests/gateway/test_inference_lane.py compares them).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from services.common.http_server import CoalescingHttpProtocol, CoalescingTransport

from . import routes
from .authz import needed_role
from .errors import GatewayError
from .fastpath import CHOSEN_ENDPOINT
from .notebook_origin import SANDBOX_HEADERS, split_host
from .proxy import SKIP_RESPONSE
from .same_head import SameHead
from .upstream import (
    SMALL_BODY,
    UpstreamError,
    UpstreamPool,
    UpstreamRefused,
    UpstreamTimeout,
    parse_base_url,
)

if TYPE_CHECKING:
    from .fastpath import ProxyFastPath
    from .gateway import Gateway
    from .upstream import _Connection

log = logging.getLogger(__name__)

#: The data planes that take the lane (a notebook's traffic is a browser's: cookies, origins).
LANE_KINDS = frozenset({"inferenceservice", "inferencegraph"})
#: The request headers admission reads. Any of them twice, and the ASGI way decides.
_READ = frozenset(
    {
        b"host",
        b"authorization",
        b"content-length",
        b"transfer-encoding",
        b"expect",
        b"kubeflow-userid",
        b"kubeflow-groups",
    }
)
_HOSTS_CACHED = 1024
_NEEDED = needed_role("POST", True)


class InferenceLane:
    """Admits requests to the lane (see the module's docstring); one per gateway."""

    def __init__(self, gw: Gateway, fast_path: ProxyFastPath) -> None:
        self.gw = gw
        self.fast_path = fast_path
        self._hosts: dict[bytes, tuple[str, str] | bool] = {}
        self.served = 0  # requests answered in the lane: for tests and metrics
        #: Exchanges waiting for their upstream, with their deadlines: one sweep a second
        #: times them out, where a timer per request would cost more than the relaying.
        self.waiting: dict[LaneExchange, float] = {}
        self._sweeping = False
        #: The last whole answer's client head and what it was made from: a model's answers
        #: differ in their bodies (and the Date, once a second) only.
        self._last_head: tuple[Any, ...] | None = None

    def answer_head(
        self, exchange: LaneExchange, status: int, headers: list[tuple[bytes, bytes]], length: int
    ) -> bytes:
        """``exchange._head(status, headers, length)``, made again only when any of them, the
        connection's keep-alive or the server's default headers (a new list each second)
        differ from the last answer's."""
        defaults = exchange.proto.server_state.default_headers
        keep_alive = exchange.keep_alive
        last = self._last_head
        if (
            last is not None
            and last[0] is defaults
            and last[1] == status
            and last[2] == length
            and last[3] == keep_alive
            and last[4] == headers
        ):
            return last[5]  # type: ignore[no-any-return]
        head = exchange._head(status, headers, length)
        self._last_head = (defaults, status, length, keep_alive, headers, head)
        return head

    def wait_for(self, exchange: LaneExchange, loop: asyncio.AbstractEventLoop) -> None:
        """Time ``exchange`` out after the pool's read timeout (to within a sweep)."""
        seconds = self.gw.upstream.read_timeout
        self.waiting[exchange] = loop.time() + seconds
        if not self._sweeping:
            self._sweeping = True
            loop.call_later(min(1.0, seconds / 2), self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for exchange, deadline in list(self.waiting.items()):
            if deadline <= now:
                exchange.timed_out()
        if self.waiting:
            loop.call_later(min(1.0, self.gw.upstream.read_timeout / 2), self._sweep, loop)
        else:
            self._sweeping = False

    def host_prefix(self, host: bytes) -> bytes | None:
        """The path prefix a request on Host ``host`` is served under, as ``ProxyFastPath``
        serves it: ``b""`` on the main origin, ``/serving/{ns}/{name}`` (or ``/graphs/...``)
        on KServe's model host ``{name}.{ns}.{domain}``; None for the ASGI way to answer
        (a notebook's origin, or a host under the ingress domain that names no model)."""
        known = self._hosts.get(host)
        if known is None:
            known = self._classify(split_host(host.decode("latin-1"))[0].removesuffix("."))
            if len(self._hosts) >= _HOSTS_CACHED:
                self._hosts.clear()
            self._hosts[host] = known
        if known is True:
            return b""
        if known is False:
            return None
        return self.fast_path.model_prefix(*known).encode()

    def _classify(self, name: str) -> tuple[str, str] | bool:
        """True: the main origin; (namespace, name): a model host; False: neither."""
        model_hosts = self.fast_path.model_hosts
        if model_hosts.claims(name):
            return routes.host_target(name, model_hosts.domain) or False
        origins = self.gw.notebook_origins
        return origins is None or origins.parse_host(name) is None

    def admit(self, proto: GatewayHttpProtocol) -> LaneExchange | None:
        """The request whose head ``proto`` has just parsed, as a lane exchange, or None."""
        if proto.parser.get_method() != b"POST":
            return None
        shape = proto.shape
        if shape is None or shape.url != proto.url or shape.headers != proto.headers:
            shape = self.shape_of(proto)
            if shape is None:
                return None
            proto.shape = shape
        gw = self.gw
        client_host = proto.client[0] if proto.client else None
        principal = gw.auth.authenticate_now(shape.fields, client_host)
        if principal is None:
            return None
        match = shape.match
        assert match.namespace and match.name and match.route.dynamic_kind
        try:
            identity = gw.authz.authorize(
                principal, match.namespace, _NEEDED, "POST", shape.path
            )  # fmt: skip
        except GatewayError:
            return None  # the ASGI way answers the refusal, with its message
        base = gw.route_table.pick(match.route.dynamic_kind, match.namespace, match.name)
        if base is None:
            return None
        taken = gw.upstream.take_idle(base)
        if taken is None:
            proto.chosen_endpoint = base  # the ASGI way goes there too (CHOSEN_ENDPOINT)
            return None
        if shape.upstream is None:
            # A data plane's upstream headers depend on the request's headers and client
            # only (the caller's identity is never passed to tenant code): once per shape.
            shape.upstream = gw.upstream_headers(proto.headers, identity, match, client_host)
        conn, key = taken
        _, prefix, host_header = parse_base_url(base)
        return LaneExchange(
            self, proto, conn, key, shape, prefix + shape.url_on_gateway, host_header,
            proto.parser.get_http_version(),
        )  # fmt: skip

    def shape_of(self, proto: GatewayHttpProtocol) -> RequestShape | None:
        """What admission decides from the head alone, or None where the lane declines."""
        url: bytes = proto.url
        if proto.parser.should_upgrade() or not url.startswith(b"/") or b"%" in url or b"/." in url:
            return None
        fields: dict[str, str] = {}
        for name, value in proto.headers:
            if name in _READ:
                key = name.decode()
                if key in fields:
                    return None
                fields[key] = value.decode("latin-1")
        length = fields.get("content-length", "0")
        if (
            "transfer-encoding" in fields
            or "expect" in fields
            or not length.isdigit()
            or int(length) > min(SMALL_BODY, self.gw.settings.max_body_bytes)
        ):
            return None
        prefix = self.host_prefix(fields.get("host", "").encode("latin-1"))
        if prefix is None:
            return None
        on_gateway = prefix + url
        try:
            path = on_gateway.partition(b"?")[0].decode("ascii")
        except UnicodeDecodeError:
            return None
        match = routes.resolve(path)
        if match is None or match.route.dynamic_kind not in LANE_KINDS:
            return None
        served = (
            (match.namespace, match.name)
            if match.route.dynamic_kind == "inferenceservice" and match.namespace and match.name
            else None
        )
        return RequestShape(url, proto.headers, fields, path, match, on_gateway, served)


class RequestShape:
    """What admission decides from a request's head alone (its URL and headers, on the
    connection it came on): the same for every request with the same head, and a client
    calling a model sends the same head call after call. So it is worked out once per
    connection and head (``GatewayHttpProtocol.shape``); who the caller is, whether they may,
    the endpoint and the upstream connection are decided afresh for every request."""

    __slots__ = (
        "url",
        "headers",
        "fields",
        "path",
        "match",
        "url_on_gateway",
        "served",
        "upstream",
        "head_for",
        "head",
    )

    def __init__(
        self,
        url: bytes,
        headers: list[tuple[bytes, bytes]],
        fields: dict[str, str],
        path: str,
        match: routes.Match,
        url_on_gateway: bytes,
        served: tuple[str, str] | None,
    ) -> None:
        self.url = url
        self.headers = headers
        self.fields = fields  # the headers admission reads, for authenticate_now
        self.path = path
        self.match = match
        self.url_on_gateway = url_on_gateway  # the URL with the model host's path prefix
        self.served = served  # the InferenceService whose activity the request counts in
        self.upstream: list[tuple[bytes, bytes]] | None = None
        #: The last upstream request head made for this shape, and what it was made for
        #: (target, Host, body length): a model's calls differ in their bodies only.
        self.head_for: tuple[bytes, bytes, int] | None = None
        self.head = b""


class LaneExchange:
    """One request in the lane. To uvicorn's protocol it is the connection's current cycle:
    it reads ``response_complete``, sets ``disconnected`` and ``keep_alive`` and calls
    ``message_event.set()`` when the client goes away."""

    __slots__ = (
        "lane",
        "proto",
        "conn",
        "key",
        "shape",
        "target",
        "host_header",
        "http_version",
        "keep_alive",
        "body",
        "response_complete",
        "disconnected",
        "message_event",
        "_started",
        "_streaming",
        "_released",
    )

    def __init__(
        self,
        lane: InferenceLane,
        proto: GatewayHttpProtocol,
        conn: _Connection,
        key: str,
        shape: RequestShape,
        target: bytes,
        host_header: bytes,
        http_version: str,
    ) -> None:
        self.lane = lane
        self.proto = proto
        self.conn = conn
        self.key = key
        self.shape = shape
        self.target = target
        self.host_header = host_header
        self.http_version = http_version
        self.keep_alive = http_version != "1.0" and proto.parser.should_keep_alive()
        self.body = bytearray()
        self.response_complete = False
        self.disconnected = False
        self.message_event = self
        self._started = False  # the response head has been written to the client
        self._streaming = False
        self._released = False  # the upstream connection has gone back to the pool

    # ---- the request -------------------------------------------------------------------

    def send(self) -> None:
        """The request is whole: send it upstream and wait for callbacks. The write comes
        first: what follows it overlaps the upstream's work."""
        conn, shape = self.conn, self.shape
        body = bytes(self.body)
        made_for = (self.target, self.host_header, len(body))
        if shape.head_for != made_for:
            assert shape.upstream is not None
            shape.head = UpstreamPool.request_head(
                "POST", self.target, self.host_header, shape.upstream, body
            )
            shape.head_for = made_for
        head = shape.head
        conn.start(head=False)
        conn.on_progress = self._progress
        if shape.served is not None:
            self.lane.gw.activity.begin(shape.served)
        try:
            conn.write(head + body if body else head)
        except UpstreamError as exc:
            # Closed by the upstream while idle: a POST is not replayed (UpstreamPool.request
            # retries idempotent requests only), so this is the ASGI way's 502 too.
            self._fail(exc)
            return
        self.lane.wait_for(self, self.proto.loop)

    def set(self) -> None:
        """uvicorn's protocol lost the client (``message_event.set()``)."""
        if self.disconnected and not self.response_complete:
            self.response_complete = True
            self._release(reuse=False)

    # ---- the response ------------------------------------------------------------------

    def _progress(self) -> None:
        conn = self.conn
        if conn.message_done:
            self._answer_whole()
        elif conn.error is not None or conn.closed:
            self._fail(conn.error or UpstreamError("upstream closed the connection"))
        elif conn.head_done and not conn.hold_head and conn.status not in (204, 304):
            # A large or streamed body: relayed as it comes, by a task.
            conn.on_progress = None
            self._streaming = True
            self.lane.waiting.pop(self, None)  # each chunk has its own read timeout now
            self.lane.gw.upstream._release_slot(self.key)  # a stream may last for hours
            task = self.proto.loop.create_task(self._relay_stream())
            self.proto.tasks.add(task)
            task.add_done_callback(self.proto.tasks.discard)

    def _answer_whole(self) -> None:
        """The whole response is here: to the client at once, then the bookkeeping (which
        overlaps the client's reading it)."""
        conn = self.conn
        status = conn.status
        body = conn.take_body() or b""
        if not self.disconnected:
            head = self.lane.answer_head(self, status, conn.headers, len(body))
            self.proto.transport.write_now(head + body)
        self._release(reuse=True)
        if not self.disconnected:
            self._complete(status)

    def _head(self, status: int, headers: list[tuple[bytes, bytes]], length: int | None) -> bytes:
        """The response head for the client: the upstream's headers less the hop-by-hop
        ones, uvicorn's own, the sandbox headers; ``length`` None: chunked."""
        parts = [STATUS_LINE.get(status) or b"HTTP/1.1 %d \r\n" % status]
        for name, value in self.proto.server_state.default_headers:
            parts += (name, b": ", value, b"\r\n")
        for name, value in headers:
            if name not in SKIP_RESPONSE and name != b"content-length":
                parts += (name, b": ", value, b"\r\n")
        for name, value in SANDBOX_HEADERS:
            parts += (name, b": ", value, b"\r\n")
        if not self.keep_alive:
            parts.append(b"connection: close\r\n")
        if status in (204, 304) or 100 <= status < 200:
            pass
        elif length is None:
            parts.append(b"transfer-encoding: chunked\r\n")
        else:
            parts.append(b"content-length: %d\r\n" % length)
        parts.append(b"\r\n")
        return b"".join(parts)

    async def _relay_stream(self) -> None:
        conn, proto = self.conn, self.proto
        pool = self.lane.gw.upstream
        length = conn.content_length
        proto.transport.write(self._head(conn.status, conn.headers, length))
        self._started = True
        ended = True
        while not self.disconnected:
            try:
                chunk = await conn.read_chunk(pool.read_timeout)
            except UpstreamError as exc:
                log.info("upstream stream ended early: %s", exc)
                ended = False
                break
            if chunk is None:
                break
            if not chunk:
                continue
            framed = b"%x\r\n%b\r\n" % (len(chunk), chunk) if length is None else chunk
            proto.transport.write(framed)
            if proto.flow.write_paused:
                await proto.flow.drain()
        if self.disconnected:
            return
        self._release(reuse=ended, slot=False)
        if length is None:
            proto.transport.write(b"0\r\n\r\n")
        elif not ended:
            # Fewer bytes than the Content-Length promised: only closing says so.
            self.keep_alive = False
        self._complete(conn.status)

    # ---- failures ------------------------------------------------------------------------

    def timed_out(self) -> None:
        self._fail(UpstreamTimeout("upstream timed out"))

    def _fail(self, exc: BaseException) -> None:
        """The upstream failed before the response started: the ASGI way's Status answer."""
        if self.response_complete or self._started or self._streaming:
            return
        self._release(reuse=False)
        if isinstance(exc, UpstreamTimeout):
            error = GatewayError(504, "upstream timed out", "Timeout")
        elif isinstance(exc, UpstreamRefused):
            error = GatewayError(502, f"upstream unavailable: {exc}", "ServiceUnavailable")
        else:
            log.warning("upstream %s%s failed: %s", self.key, self.target.decode(), exc)
            error = GatewayError(502, "upstream unavailable", "ServiceUnavailable")
        if self.disconnected:
            return
        response = error.response()
        headers = [(k, v) for k, v in response.raw_headers if k != b"content-length"]
        self.proto.transport.write(
            self._head(error.code, headers, len(response.body)) + bytes(response.body)
        )
        self._complete(error.code)

    # ---- the end ---------------------------------------------------------------------------

    def _release(self, reuse: bool, slot: bool = True) -> None:
        """Hand the upstream connection back (kept alive only after a clean exchange)."""
        if self._released:
            return
        self._released = True
        self.lane.waiting.pop(self, None)
        conn = self.conn
        conn.on_progress = None
        if not reuse:
            conn.abort()
        self.lane.gw.upstream._release(self.key, conn, slot=slot and not self._streaming)
        if self.shape.served is not None:
            self.lane.gw.activity.end(self.shape.served)

    def _complete(self, status: int) -> None:
        proto = self.proto
        self.response_complete = True
        self.lane.served += 1
        if proto.access_log:
            client = f"{proto.client[0]}:{proto.client[1]}" if proto.client else "-"
            proto.access_logger.info(
                '%s - "%s %s HTTP/%s" %d', client, "POST", proto.url.decode(),
                self.http_version, status,
            )  # fmt: skip
        if not self.keep_alive:
            proto.transport.close()
        proto.lane_response_complete()


class GatewayHttpProtocol(CoalescingHttpProtocol):
    """The gateway's HTTP/1.1 protocol: uvicorn's, coalescing writes, with the inference
    lane (the app's ``inference_lane``) ahead of the ASGI request cycle."""

    lane: InferenceLane | None
    transport: CoalescingTransport  # type: ignore[assignment]
    #: The endpoint admission picked before declining, for the ASGI way to use.
    chosen_endpoint: str | None = None
    #: What admission made of the last head it admitted on this connection.
    shape: RequestShape | None = None
    #: The last request's head, when it came whole in one read and went into the lane
    #: (gateway/same_head.py): the same bytes again are the same URL and headers.
    same_head: SameHead | None = None
    #: Messages llhttp began in the current read, and whether one is still open.
    _begun = 0
    _open = False
    #: When the last lane answer left (loop time), and whether the keep-alive timer is the
    #: lane's (``lane_response_complete``) rather than uvicorn's.
    _idle_since = 0.0
    _lazy_keep_alive = False

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.lane = getattr(config.app, "inference_lane", None)

    def data_received(self, data: bytes) -> None:
        """Between requests, a read that is exactly the last lane request's head again (its
        length aside) and its whole body is admitted without llhttp (``_repeat``); any other
        read is parsed, and remembered (``same_head``) when it was one whole request that
        went into the lane."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            same = self.same_head
            if same is not None:
                length = same.body_length(data)
                if length >= 0 and self._repeat(data, length):
                    return
            at_start = not self._open
            self._begun = 0
            super().data_received(data)
            exchange = self.cycle
            if at_start and self._begun == 1 and not self._open and type(exchange) is LaneExchange:
                self._remember_head(data, exchange)
            return
        super().data_received(data)

    def _repeat(self, data: bytes, length: int) -> bool:
        """A request with the last lane request's head: admitted (or not) as if parsed."""
        assert self.lane is not None
        self.chosen_endpoint = None
        exchange = self.lane.admit(self)
        if exchange is None:
            return False
        if not self._lazy_keep_alive:
            self._unset_keepalive_if_required()
        if length:
            exchange.body = data[len(data) - length :]  # type: ignore[assignment]
        self.cycle = exchange  # type: ignore[assignment]
        exchange.send()
        return True

    def lane_response_complete(self) -> None:
        """uvicorn's ``on_response_complete`` for a lane answer, with one keep-alive timer
        per idle spell instead of one per answer: when due, the timer looks at when the
        connection last went idle (``_keep_alive_due``)."""
        if self.pipeline or self.flow.read_paused:
            super().on_response_complete()  # uvicorn starts the pipelined request
            return
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self._lazy_keep_alive = True
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self._keep_alive_due
            )

    def _keep_alive_due(self) -> None:
        self.timeout_keep_alive_task = None
        self._lazy_keep_alive = False
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            return  # a repeated request is in the lane: its answer arms the timer again
        left = self._idle_since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self._lazy_keep_alive = True
            self.timeout_keep_alive_task = self.loop.call_later(left, self._keep_alive_due)
        else:
            self.timeout_keep_alive_handler()

    def _unset_keepalive_if_required(self) -> None:
        self._lazy_keep_alive = False
        super()._unset_keepalive_if_required()

    def _remember_head(self, data: bytes, exchange: LaneExchange) -> None:
        """``data``, one whole request llhttp parsed into the lane: its head, when kept alive."""
        if not exchange.keep_alive:
            return
        end = data.find(b"\r\n\r\n") + 4
        if end >= 4 and end + len(exchange.body) == len(data):
            self.same_head = SameHead.of(data[:end])

    def on_message_begin(self) -> None:
        """A new request: its ASGI scope is made only if it goes the ASGI way."""
        self._begun += 1
        self._open = True
        self.same_head = None
        self.url = b""
        self.expect_100_continue = False
        self.headers = []

    def on_headers_complete(self) -> None:
        lane = self.lane
        self.chosen_endpoint = None
        if lane is not None and (self.cycle is None or self.cycle.response_complete):
            exchange = lane.admit(self)
            if exchange is not None:
                self.cycle = exchange  # type: ignore[assignment]
                return
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        super().on_message_begin()  # the scope, as uvicorn makes it
        self.url, self.headers, self.expect_100_continue = url, headers, expect
        self.scope["headers"] = headers
        if self.chosen_endpoint is not None:
            self.scope[CHOSEN_ENDPOINT] = self.chosen_endpoint  # type: ignore[literal-required]
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if type(cycle) is LaneExchange:
            cycle.body += body
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._open = False
        cycle = self.cycle
        if type(cycle) is LaneExchange:
            if not cycle.disconnected:
                cycle.send()
            return
        super().on_message_complete()
