"""The Open Inference Protocol over gRPC through the gateway, with tritonclient.grpc.

A platform of this module's own (real processes, its own database) in OIDC mode with a real
OIDC provider (tests/oidc, as the gateway tests use): people call with their ID tokens as
``authorization: Bearer`` metadata, workloads with service-account tokens, and nobody
anonymously. user@example.com owns ``grpc-a``, where a sklearn model is served,
second@example.com owns ``grpc-b``. The gateway's gRPC port is a free one
(``SHIPYARD_GATEWAY_GRPC_PORT``); calls name the InferenceService by the authority
``{name}.{namespace}.example.com`` or by the ``x-shipyard-inferenceservice`` metadata.
Short scaling timings let one service scale to zero and be activated by a gRPC call.
What tritonclient cannot send (an unknown grpc-encoding, a decompression bomb) is sent by
``raw_call``, a few lines of h2 client.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
import zlib
from collections.abc import Iterator
from typing import Any

import h2.config
import h2.connection
import h2.events
import httpx
import numpy as np
import pytest

from services.common.runtime import LocalRuntime
from tests import specs
from tests.conftest import ADMIN_USER, RunningSeaweedFS, create_profile, free_port
from tests.gateway.conftest import OIDCServer, oidc_platform, provider_for_platform

from . import triton_grpc_calls as triton
from .conftest import ready, train_sklearn

ALICE, BOB = "user@example.com", "second@example.com"  # the test provider's users
NS_A, NS_B = "grpc-a", "grpc-b"
SAMPLES = [[5.0, 3.4, 1.5, 0.2], [5.9, 2.8, 4.3, 1.3], [6.6, 3.0, 5.6, 2.0], [6.1, 2.9, 4.6, 1.4]]
TARGET = "x-shipyard-inferenceservice"


#: Each user's ID token, from the provider (filled by the ``grpc_platform`` fixture).
TOKENS: dict[str, str] = {}


def as_user(user: str) -> dict[str, str]:
    return {"authorization": f"Bearer {TOKENS[user]}"}


@pytest.fixture(scope="module")
def oidc_provider() -> Iterator[OIDCServer]:
    with provider_for_platform() as server:
        yield server


@pytest.fixture(scope="module")
def grpc_platform(
    nats_url: str,
    seaweedfs: RunningSeaweedFS,
    oidc_provider: OIDCServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Any]:
    """The platform in OIDC mode, with its gRPC port recorded as ``grpc_port``; ``TOKENS``
    holds the users' ID tokens (ADMIN_USER is a cluster admin)."""
    for user in (ALICE, BOB, ADMIN_USER):
        TOKENS[user] = asyncio.run(oidc_provider.id_token(user))
    port = free_port()
    env = {
        "SHIPYARD_GATEWAY_GRPC_PORT": str(port),
        "SHIPYARD_SCALE_TO_ZERO_SECONDS": "2",
        "SHIPYARD_ACTIVITY_REPORT_SECONDS": "0.5",
        "SHIPYARD_ACTIVATION_TIMEOUT_SECONDS": "30",
    }
    with oidc_platform(
        tmp_path_factory.mktemp("grpc-platform"),
        "shipyard_grpc",
        oidc_provider,
        nats_url=nats_url,
        s3=seaweedfs.config,
        env=env,
    ) as platform:
        platform.grpc_port = port
        platform.address = f"127.0.0.1:{port}"
        yield platform


def isvc_path(ns: str, name: str = "") -> str:
    base = f"/apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices"
    return f"{base}/{name}" if name else base


def wait_ready(api: httpx.Client, ns: str, name: str, user: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    obj: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = api.get(isvc_path(ns, name), headers=as_user(user))
        assert r.status_code == 200, r.text
        obj = r.json()
        if ready(obj) and (obj["status"].get("components") or {}).get("predictor", {}).get(
            "endpoint"
        ):
            return
        time.sleep(0.2)
    raise AssertionError(f"{ns}/{name} is not ready: {obj.get('status')}")


def claim_phase(api: httpx.Client, ns: str, name: str) -> str | None:
    claim = api.get(f"/api/v1/namespaces/{ns}/persistentvolumeclaims/{name}").json()
    return (claim.get("status") or {}).get("phase")


@pytest.fixture(scope="module")
def served(grpc_platform: Any) -> Iterator[dict[str, Any]]:
    """Profiles for alice and bob; in ``grpc-a`` the sklearn ``iris`` and the scale-to-zero
    ``iris0`` (same model) from alice's claim. The trained model, to compare."""
    with httpx.Client(base_url=grpc_platform.gateway_url, timeout=30) as api:
        api.headers.update(as_user(ADMIN_USER))
        create_profile(api, NS_A, ALICE)
        create_profile(api, NS_B, BOB)
        api.headers.update(as_user(ALICE))
        r = api.post(f"/api/v1/namespaces/{NS_A}/persistentvolumeclaims", json=specs.claim("m"))
        assert r.status_code == 201, r.text
        deadline = time.monotonic() + 20
        while claim_phase(api, NS_A, "m") != "Bound":
            assert time.monotonic() < deadline, "the claim never bound"
            time.sleep(0.1)
        data = asyncio.run(LocalRuntime(grpc_platform.state_dir).resolve_volume(NS_A, "m"))
        model = train_sklearn(data / "iris")
        for name, extra in (("iris", {}), ("iris0", {"minReplicas": 0})):
            spec = {
                "model": {
                    "modelFormat": {"name": "sklearn"},
                    "protocolVersion": "v2",
                    "storageUri": "pvc://m/iris",
                },
                **extra,
            }
            body = {
                "apiVersion": "serving.kserve.io/v1beta1",
                "kind": "InferenceService",
                "metadata": {"name": name},
                "spec": {"predictor": spec},
            }
            r = api.post(isvc_path(NS_A), json=body)
            assert r.status_code == 201, r.text
        for name in ("iris", "iris0"):
            wait_ready(api, NS_A, name, ALICE)
        yield {"model": model, "api": api}


def sample_input(name: str = "input-0") -> dict[str, Any]:
    return {"name": name, "datatype": "FP32", "data": SAMPLES}


def predicted(served: Any) -> list[int]:
    """What the served model predicts for SAMPLES (as FP32, as the calls send them)."""
    return served["model"].predict(np.array(SAMPLES, dtype=np.float32)).tolist()  # type: ignore[no-any-return]


def authority(name: str, ns: str = NS_A) -> str:
    return f"{name}.{ns}.example.com"


def status_of(result: dict[str, Any]) -> tuple[str, str]:
    """A refused call's (status, message); fails on an answer."""
    assert "status" in result, f"expected a refusal, got {result}"
    return result["status"], result["message"]


def test_grpc_by_authority_health_metadata_and_infer(grpc_platform: Any, served: Any) -> None:
    me = as_user(ALICE)
    calls: list[dict[str, Any]] = [
        {"method": m, "args": args, "headers": me}
        for m, args in (
            ("is_server_live", []),
            ("is_server_ready", []),
            ("is_model_ready", ["iris"]),
            ("get_model_metadata", ["iris"]),
            ("get_server_metadata", []),
        )
    ]
    calls.append({"method": "infer", "args": ["iris"], "inputs": [sample_input()], "headers": me})
    live, ready_, model_ready, meta, server, result = triton.run(
        grpc_platform.address, calls, authority("iris")
    )
    assert live == ready_ == model_ready == {"reply": True}
    assert meta["reply"]["name"] == "iris" and meta["reply"]["versions"] == ["1"]
    assert meta["reply"]["platform"].startswith("sklearn")
    assert "binary_tensor_data" in server["reply"]["extensions"]
    (out,) = result["reply"]
    assert out["data"] == predicted(served)
    assert out["shape"] == [len(SAMPLES)] and out["datatype"] == "INT64"


def test_grpc_by_metadata_header_infer(grpc_platform: Any, served: Any) -> None:
    """No authority of the ingress domain (the client's own 127.0.0.1:port): the metadata."""
    headers = {**as_user(ALICE), TARGET: f"{NS_A}/iris"}
    ready_, result = triton.run(
        grpc_platform.address,
        [
            {"method": "is_model_ready", "args": ["iris"], "headers": headers},
            {"method": "infer", "args": ["iris"], "inputs": [sample_input()], "headers": headers},
        ],
    )
    assert ready_ == {"reply": True}
    assert result["reply"][0]["data"] == predicted(served)


def test_grpc_other_tenant_and_anonymous_refused(grpc_platform: Any, served: Any) -> None:
    denied, anonymous, bogus = triton.run(
        grpc_platform.address,
        [
            {
                "method": "infer",
                "args": ["iris"],
                "inputs": [sample_input()],
                "headers": as_user(BOB),
            },
            {"method": "is_server_live", "args": []},
            {"method": "is_server_live", "args": [], "headers": {"authorization": "Bearer x.y"}},
        ],
        authority("iris"),
    )
    status, message = status_of(denied)
    assert status == "StatusCode.PERMISSION_DENIED"
    assert BOB in message and NS_A in message
    status, message = status_of(anonymous)
    assert status == "StatusCode.UNAUTHENTICATED" and "authentication required" in message
    assert status_of(bogus)[0] == "StatusCode.UNAUTHENTICATED"


def test_grpc_bearer_service_account_tokens_scoped(grpc_platform: Any, served: Any) -> None:
    """The bearer token metadata: a workload token of grpc-a infers, one of grpc-b cannot."""
    api = served["api"]
    tokens = {}
    for ns, user in ((NS_A, ALICE), (NS_B, BOB)):
        r = api.post(
            f"/api/v1/namespaces/{ns}/serviceaccounts/default-editor/token",
            headers=as_user(user),
        )
        assert r.status_code == 201, r.text
        tokens[ns] = {"authorization": f"Bearer {r.json()['status']['token']}"}
    own, other = triton.run(
        grpc_platform.address,
        [
            {"method": "infer", "args": ["iris"], "inputs": [sample_input()], "headers": tokens[ns]}
            for ns in (NS_A, NS_B)
        ],
        authority("iris"),
    )
    assert own["reply"][0]["data"] == predicted(served)
    status, message = status_of(other)
    assert status == "StatusCode.PERMISSION_DENIED"
    assert f"system:serviceaccount:{NS_B}:default-editor" in message


def test_grpc_unknown_service_and_model_not_found(grpc_platform: Any, served: Any) -> None:
    me = as_user(ALICE)
    address = grpc_platform.address
    status, message = status_of(
        triton.call(address, "is_server_live", headers=me, authority=authority("nope"))
    )
    assert status == "StatusCode.NOT_FOUND" and f"{NS_A}/nope" in message
    status, message = status_of(
        triton.call(
            address,
            "infer",
            "other-model",
            inputs=[sample_input()],
            headers=me,
            authority=authority("iris"),
        )
    )
    assert status == "StatusCode.NOT_FOUND" and "other-model" in message
    status, message = status_of(triton.call(address, "is_server_live", headers=me))
    assert status == "StatusCode.INVALID_ARGUMENT" and TARGET in message


def test_grpc_bad_tensor_invalid_argument(grpc_platform: Any, served: Any) -> None:
    """The shape says 48 bytes, the data has 32: the model server's 400, its message."""
    bad = {"name": "input-0", "datatype": "FP32", "zeros": [2, 4], "shape": [3, 4]}
    status, message = status_of(
        triton.call(
            grpc_platform.address,
            "infer",
            "iris",
            inputs=[bad],
            headers=as_user(ALICE),
            authority=authority("iris"),
        )
    )
    assert status == "StatusCode.INVALID_ARGUMENT" and "input-0" in message


def test_grpc_message_size_bounded(grpc_platform: Any, served: Any) -> None:
    """A message over the gateway's body limit (32 MiB) is refused before it is read."""
    big = {"name": "input-0", "datatype": "FP32", "zeros": [33 * 1024 * 1024 // 16, 4]}
    status, message = status_of(
        triton.call(
            grpc_platform.address,
            "infer",
            "iris",
            inputs=[big],
            headers=as_user(ALICE),
            authority=authority("iris"),
        )
    )
    assert status == "StatusCode.RESOURCE_EXHAUSTED" and "larger than" in message


def servers(platform: Any, name: str) -> list[Any]:
    runtime = LocalRuntime(platform.state_dir)
    selector = {"serving.kserve.io/inferenceservice": name}
    return asyncio.run(runtime.list(selector, namespace=NS_A))


def test_grpc_activates_scaled_to_zero(grpc_platform: Any, served: Any) -> None:
    """A gRPC call for a service scaled to zero is held while it starts, then answered; gRPC
    calls then keep it from scaling to zero again."""
    deadline = time.monotonic() + 30
    while servers(grpc_platform, "iris0") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert servers(grpc_platform, "iris0") == [], "iris0 was not scaled to zero"
    one: dict[str, Any] = {"method": "infer", "args": ["iris0"], "inputs": [sample_input()]}
    one["headers"] = as_user(ALICE)
    (first,) = triton.run(grpc_platform.address, [one], authority("iris0"))
    assert first["reply"][0]["data"] == predicted(served)
    (server,) = servers(grpc_platform, "iris0")
    # gRPC traffic is reported as activity: calls for three times the grace keep the server
    # up (idle, it is gone about 3 s after the last call).
    paced: list[dict[str, Any]] = [one, {"method": "sleep", "args": [0.25]}] * 24
    answers = triton.run(grpc_platform.address, paced, authority("iris0"))
    assert len(answers) == 24 and all(a == first for a in answers), answers
    assert [s.name for s in servers(grpc_platform, "iris0")] == [server.name]


def test_grpc_port_speaks_http2_only(grpc_platform: Any, served: Any) -> None:
    """An HTTP/1.1 request on the gRPC port gets the connection closed, not an answer."""
    with socket.create_connection(("127.0.0.1", grpc_platform.grpc_port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        data = sock.recv(65536)
        while chunk := sock.recv(65536):
            data += chunk
    assert b"HTTP/1.1" not in data


# ---- compression


def many_rows_input(rows: int = 512) -> dict[str, Any]:
    """SAMPLES repeated: a request that compresses well (grpc core sends a message
    uncompressed when compressing would not make it smaller)."""
    return {"name": "input-0", "datatype": "FP32", "data": SAMPLES * (rows // len(SAMPLES))}


def test_grpc_compressed_requests_gzip_and_deflate(grpc_platform: Any, served: Any) -> None:
    rows = many_rows_input()
    call = {"method": "infer", "args": ["iris"], "inputs": [rows], "headers": as_user(ALICE)}
    plain, gzip, deflate = triton.run(
        grpc_platform.address,
        [call, {**call, "compression": "gzip"}, {**call, "compression": "deflate"}],
        authority("iris"),
    )
    expected = predicted(served) * (len(rows["data"]) // len(SAMPLES))
    assert plain["reply"][0]["data"] == expected
    assert gzip == plain and deflate == plain


def raw_call(
    port: int, headers: list[tuple[str, str]], message: bytes, flag: int = 0
) -> dict[str, str]:
    """One ModelInfer call on iris with h2 by hand, the request message sent with the
    Compressed-Flag ``flag`` as flow control allows: the answer's headers and trailers."""
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    )
    body = memoryview(bytes([flag]) + len(message).to_bytes(4, "big") + message)
    answer: dict[str, str] = {}
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        request = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/inference.GRPCInferenceService/ModelInfer"),
            (":authority", authority("iris")),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("authorization", f"Bearer {TOKENS[ALICE]}"),
            *headers,
        ]
        conn.send_headers(sid, request)
        ended = done = False
        while not done:
            while body and (room := conn.local_flow_control_window(sid)) > 0:
                size = min(len(body), room, conn.max_outbound_frame_size)
                conn.send_data(sid, bytes(body[:size]))
                body = body[size:]
            if not body and not ended:
                conn.end_stream(sid)
                ended = True
            sock.sendall(conn.data_to_send())
            data = sock.recv(65536)
            assert data, f"the connection closed; so far {answer}"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    answer.update(dict(event.headers))  # type: ignore[arg-type]
                elif isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, sid)
                done = done or isinstance(event, h2.events.StreamEnded | h2.events.StreamReset)
    return answer


def gzip_bomb(size: int = 1 << 30) -> bytes:
    """``size`` zero bytes as a valid gzip member of about 1 MiB: each MiB is compressed
    after a full flush (so it compresses alike), repeated, then the real CRC and length."""
    chunk = bytes(1 << 20)
    deflater = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    first = deflater.compress(chunk) + deflater.flush(zlib.Z_FULL_FLUSH)
    unit = deflater.compress(chunk) + deflater.flush(zlib.Z_FULL_FLUSH)
    end = deflater.flush()[:-8]  # the last block; the trailer covers two chunks only
    crc = 0
    for _ in range(size // len(chunk)):
        crc = zlib.crc32(chunk, crc)
    trailer = struct.pack("<II", crc, size & 0xFFFFFFFF)
    return first + unit * (size // len(chunk) - 1) + end + trailer


def peak_rss(pid: int) -> int:
    """The process's peak resident set (bytes), from /proc."""
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def test_grpc_decompression_bomb_resource_exhausted(grpc_platform: Any, served: Any) -> None:
    """1 GiB of zeros, gzip-compressed to about 1 MiB (under the 32 MiB message limit): the
    gateway stops inflating at the limit, quickly, and its memory never holds the GiB."""
    bomb = gzip_bomb()
    assert len(bomb) < 2 << 20 and zlib.decompressobj(31).decompress(bomb, 1 << 20) == bytes(
        1 << 20
    )
    gateway = next(c for c in grpc_platform.children if c.name == "gateway")
    assert gateway.proc is not None
    before = peak_rss(gateway.proc.pid)
    started = time.monotonic()
    answer = raw_call(grpc_platform.grpc_port, [("grpc-encoding", "gzip")], bomb, flag=1)
    elapsed = time.monotonic() - started
    assert answer["grpc-status"] == "8", answer  # RESOURCE_EXHAUSTED
    assert "larger than 33554432 bytes once decompressed" in answer["grpc-message"]
    assert elapsed < 5, elapsed
    assert peak_rss(gateway.proc.pid) < before + (256 << 20)


def test_grpc_unknown_encoding_unimplemented(grpc_platform: Any, served: Any) -> None:
    answer = raw_call(grpc_platform.grpc_port, [("grpc-encoding", "snappy")], b"", flag=1)
    assert answer["grpc-status"] == "12", answer  # UNIMPLEMENTED
    assert "'snappy' is not supported" in answer["grpc-message"]
    assert "gzip" in answer["grpc-message"] and "deflate" in answer["grpc-message"]
    assert set(answer["grpc-accept-encoding"].split(",")) == {"identity", "deflate", "gzip"}


def test_grpc_compressed_flag_without_encoding_refused(grpc_platform: Any, served: Any) -> None:
    """The Compressed-Flag on a call without grpc-encoding is the protocol's INTERNAL."""
    answer = raw_call(grpc_platform.grpc_port, [], zlib.compress(b"x" * 100), flag=1)
    assert answer["grpc-status"] == "13", answer
    assert "without a grpc-encoding" in answer["grpc-message"]


# ---- ModelStreamInfer


def test_grpc_stream_infer_answers_in_order(grpc_platform: Any, served: Any) -> None:
    """N requests on one stream, N callbacks, each the model's predictions, in order;
    compressed requests on a stream too."""
    requests = [{"inputs": [sample_input()]}] * 3 + [
        {"inputs": [{"name": "input-0", "datatype": "FP32", "data": SAMPLES[:k]}]}
        for k in (1, 2, 3)
    ] * 4
    stream: dict[str, Any] = {
        "method": "stream",
        "args": ["iris"],
        "requests": requests,
        "headers": as_user(ALICE),
    }
    (plain, gzip) = triton.run(
        grpc_platform.address, [stream, {**stream, "compression": "gzip"}], authority("iris")
    )
    answers = plain["reply"]
    assert [a.get("id") for a in answers] == [str(i) for i in range(len(requests))], answers
    for answer, request in zip(answers, requests, strict=True):
        rows = request["inputs"][0]["data"]
        (out,) = answer["outputs"]
        assert out["data"] == predicted(served)[: len(rows)] and out["shape"] == [len(rows)]
    assert gzip == plain


def test_grpc_stream_failed_request_keeps_stream_open(grpc_platform: Any, served: Any) -> None:
    """A request the model server refuses is that request's error_message; the ones after it
    are answered."""
    bad = {"name": "input-0", "datatype": "FP32", "zeros": [2, 4], "shape": [3, 4]}
    (result,) = triton.run(
        grpc_platform.address,
        [
            {
                "method": "stream",
                "args": ["iris"],
                "requests": [{"inputs": [sample_input()]}, {"inputs": [bad]}]
                + [{"inputs": [sample_input()]}],
                "headers": as_user(ALICE),
            }
        ],
        authority("iris"),
    )
    first, failed, last = result["reply"]
    assert first["outputs"][0]["data"] == predicted(served) == last["outputs"][0]["data"]
    assert "input-0" in failed["message"], failed
    assert last["id"] == "2"


def test_grpc_stream_other_tenant_refused(grpc_platform: Any, served: Any) -> None:
    """A stream to another tenant's model is PERMISSION_DENIED as a unary call is, and no
    request on it is answered."""
    (result,) = triton.run(
        grpc_platform.address,
        [
            {
                "method": "stream",
                "args": ["iris"],
                "requests": [{"inputs": [sample_input()]}] * 2,
                "headers": as_user(BOB),
            }
        ],
        authority("iris"),
    )
    (refusal,) = result["reply"]
    assert refusal["status"] == "StatusCode.PERMISSION_DENIED", refusal
    assert BOB in refusal["message"] and NS_A in refusal["message"]


# ---- the ModelInfer conversion alone (gateway/grpc_tensors.py). Our messages: this process
# never imports tritonclient.grpc (its calls run in a child), whose share their package.


def test_convert_typed_contents_to_rest_binary_the_model_server_reads() -> None:
    from gateway.grpc_tensors import rest_request
    from services.common.eventspb.inference import grpc_predict_v2_pb2 as wire
    from services.serving.modelserver.tensors import decode_request

    request = wire.ModelInferRequest(model_name="m", id="r1")
    values = {
        "f": ("FP64", [2], "fp64_contents", [1.5, -2.25]),
        "i": ("INT64", [1, 2], "int64_contents", [7, -8]),
        "u": ("UINT8", [3], "uint_contents", [0, 1, 255]),
        "b": ("BOOL", [2], "bool_contents", [True, False]),
        "s": ("BYTES", [2], "bytes_contents", [b"ab", b""]),
    }
    for name, (datatype, shape, field, data) in values.items():
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        getattr(tensor.contents, field).extend(data)
    request.outputs.add(name="out")
    body, length = rest_request(request)
    decoded = decode_request(body, str(length))
    assert decoded.id == "r1" and decoded.binary_output
    assert decoded.outputs == [{"name": "out", "parameters": {"binary_data": True}}]
    got = dict(decoded.inputs)
    for name, (_, shape, _, data) in values.items():
        assert list(got[name].shape) == shape
        assert got[name].reshape(-1).tolist() == data, name


def test_convert_refuses_malformed_tensors_invalid_argument() -> None:
    from gateway.grpc_server import Code, GRPCError
    from gateway.grpc_tensors import rest_request
    from services.common.eventspb.inference import grpc_predict_v2_pb2 as wire

    def refusal(request: Any) -> str:
        with pytest.raises(GRPCError) as info:
            rest_request(request)
        assert info.value.code == Code.INVALID_ARGUMENT
        return info.value.message

    assert "at least one input" in refusal(wire.ModelInferRequest(model_name="m"))
    two = wire.ModelInferRequest(model_name="m")
    two.inputs.add(name="a", datatype="FP32", shape=[1])
    two.inputs.add(name="b", datatype="FP32", shape=[1])
    two.raw_input_contents.append(b"\0\0\0\0")
    assert "1 entries for 2 inputs" in refusal(two)
    half = wire.ModelInferRequest(model_name="m")
    half.inputs.add(name="h", datatype="FP16", shape=[1]).contents.fp32_contents.append(1.0)
    assert "h: FP16 has no contents field" in refusal(half)
    short = wire.ModelInferRequest(model_name="m")
    short.inputs.add(name="x", datatype="FP32", shape=[2, 2]).contents.fp32_contents.append(1)
    assert "x: contents.fp32_contents has 1 elements, shape [2, 2] needs 4" in refusal(short)
    odd = wire.ModelInferRequest(model_name="m")
    odd.inputs.add(name="q", datatype="COMPLEX", shape=[1])
    assert "q: unsupported datatype 'COMPLEX'" in refusal(odd)


@pytest.mark.parametrize("binary", [True, False])
def test_convert_model_server_answer_to_raw_outputs(binary: bool) -> None:
    from gateway.grpc_tensors import fill_response
    from services.common.eventspb.inference import grpc_predict_v2_pb2 as wire
    from services.serving.modelserver.tensors import InferRequest, encode_response

    outputs: list[tuple[str, np.ndarray]] = [
        ("label", np.array([2, 0], dtype=np.int64)),
        ("score", np.array([[0.5, 0.25]], dtype=np.float32)),
        ("text", np.array([b"yes", b"no"], dtype=object)),
    ]
    body, length = encode_response("m", InferRequest("r9", [], None, binary), outputs)
    response = wire.ModelInferResponse()
    fill_response(response, body, str(length) if length is not None else None, "m")
    assert response.model_name == "m" and response.id == "r9"
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("label", "INT64", [2]),
        ("score", "FP32", [1, 2]),
        ("text", "BYTES", [2]),
    ]
    raw = response.raw_output_contents
    assert np.frombuffer(raw[0], dtype="<i8").tolist() == [2, 0]
    assert np.frombuffer(raw[1], dtype="<f4").tolist() == [0.5, 0.25]
    assert raw[2] == b"\x03\0\0\0yes\x02\0\0\0no"
