"""The Open Inference Protocol over gRPC through the gateway, with tritonclient.grpc.

A platform of this module's own (real processes, its own database) in OIDC mode with a real
OIDC provider (tests/oidc, as the gateway tests use): people call with their ID tokens as
``authorization: Bearer`` metadata, workloads with service-account tokens, and nobody
anonymously. user@example.com owns ``grpc-a``, where a sklearn model is served,
second@example.com owns ``grpc-b``. The gateway's gRPC port is a free one
(``SHIPYARD_GATEWAY_GRPC_PORT``); calls name the InferenceService by the authority
``{name}.{namespace}.example.com`` or by the ``x-shipyard-inferenceservice`` metadata.
Short scaling timings let one service scale to zero and be activated by a gRPC call.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from services.common.runtime import LocalRuntime
from tests import specs
from tests.conftest import (
    ADMIN_USER,
    RunningSeaweedFS,
    create_profile,
    free_port,
    fresh_database,
    running_platform,
)
from tests.gateway.conftest import CLIENT_SECRET, COOKIE_SECRET, OIDCServer

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
    server = OIDCServer(["http://127.0.0.1:9/oauth2/callback"])  # logins stop at the redirect
    server.start()
    try:
        yield server
    finally:
        server.stop()


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
        "SHIPYARD_OIDC_ISSUER": oidc_provider.issuer,
        "SHIPYARD_OIDC_CLIENT_SECRET": CLIENT_SECRET,
        "SHIPYARD_COOKIE_SECRET": COOKIE_SECRET,
        "SHIPYARD_CLUSTER_ADMINS": ADMIN_USER,
        "SHIPYARD_GATEWAY_GRPC_PORT": str(port),
        "SHIPYARD_SCALE_TO_ZERO_SECONDS": "2",
        "SHIPYARD_ACTIVITY_REPORT_SECONDS": "0.5",
        "SHIPYARD_ACTIVATION_TIMEOUT_SECONDS": "30",
    }
    with fresh_database("shipyard_grpc") as database_url:
        with running_platform(
            tmp_path_factory.mktemp("grpc-platform"),
            database_url=database_url,
            nats_url=nats_url,
            s3=seaweedfs.config,
            auth_mode="oidc",
            env=env,
        ) as platform:
            platform.grpc_port = port
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


def client(platform: Any, authority: str | None = None) -> grpcclient.InferenceServerClient:
    """tritonclient.grpc on the gateway's gRPC port, with ``authority`` as the :authority."""
    args = [("grpc.default_authority", authority)] if authority else None
    return grpcclient.InferenceServerClient(f"127.0.0.1:{platform.grpc_port}", channel_args=args)


def infer(c: grpcclient.InferenceServerClient, model: str, headers: dict[str, str]) -> Any:
    x = np.array(SAMPLES, dtype=np.float32)
    tensor = grpcclient.InferInput("input-0", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return c.infer(model, [tensor], headers=headers)


def refused(call: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value


def test_grpc_by_authority_health_metadata_and_infer(grpc_platform: Any, served: Any) -> None:
    c = client(grpc_platform, f"iris.{NS_A}.example.com")
    me = as_user(ALICE)
    assert c.is_server_live(headers=me)
    assert c.is_server_ready(headers=me)
    assert c.is_model_ready("iris", headers=me)
    meta = c.get_model_metadata("iris", headers=me)
    assert meta.name == "iris" and list(meta.versions) == ["1"]
    assert meta.platform.startswith("sklearn")
    server = c.get_server_metadata(headers=me)
    assert "binary_tensor_data" in server.extensions
    result = infer(c, "iris", me)
    expected = served["model"].predict(np.array(SAMPLES, dtype=np.float32)).tolist()
    out = result.get_response().outputs[0]
    assert result.as_numpy(out.name).tolist() == expected
    assert list(out.shape) == [len(SAMPLES)]


def test_grpc_by_metadata_header_infer(grpc_platform: Any, served: Any) -> None:
    """No authority of the ingress domain (the client's own 127.0.0.1:port): the metadata."""
    c = client(grpc_platform)
    headers = {**as_user(ALICE), TARGET: f"{NS_A}/iris"}
    assert c.is_model_ready("iris", headers=headers)
    result = infer(c, "iris", headers)
    out = result.get_response().outputs[0].name
    expected = served["model"].predict(np.array(SAMPLES, dtype=np.float32)).tolist()
    assert result.as_numpy(out).tolist() == expected


def test_grpc_other_tenant_and_anonymous_refused(grpc_platform: Any, served: Any) -> None:
    c = client(grpc_platform, f"iris.{NS_A}.example.com")
    denied = refused(lambda: infer(c, "iris", as_user(BOB)))
    assert denied.status() == "StatusCode.PERMISSION_DENIED"
    assert BOB in denied.message() and NS_A in denied.message()
    anonymous = refused(lambda: c.is_server_live())
    assert anonymous.status() == "StatusCode.UNAUTHENTICATED"
    assert "authentication required" in anonymous.message()
    bogus = refused(lambda: c.is_server_live(headers={"authorization": "Bearer not-a-jwt"}))
    assert bogus.status() == "StatusCode.UNAUTHENTICATED"


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
    c = client(grpc_platform, f"iris.{NS_A}.example.com")
    out = infer(c, "iris", tokens[NS_A])
    assert out.as_numpy(out.get_response().outputs[0].name).shape == (len(SAMPLES),)
    denied = refused(lambda: infer(c, "iris", tokens[NS_B]))
    assert denied.status() == "StatusCode.PERMISSION_DENIED"
    assert f"system:serviceaccount:{NS_B}:default-editor" in denied.message()


def test_grpc_unknown_service_and_model_not_found(grpc_platform: Any, served: Any) -> None:
    me = as_user(ALICE)
    missing = refused(
        lambda: client(grpc_platform, f"nope.{NS_A}.example.com").is_server_live(headers=me)
    )
    assert missing.status() == "StatusCode.NOT_FOUND"
    assert f"{NS_A}/nope" in missing.message()
    c = client(grpc_platform, f"iris.{NS_A}.example.com")
    unknown_model = refused(lambda: infer(c, "other-model", me))
    assert unknown_model.status() == "StatusCode.NOT_FOUND"
    assert "other-model" in unknown_model.message()
    unnamed = refused(lambda: client(grpc_platform).is_server_live(headers=me))
    assert unnamed.status() == "StatusCode.INVALID_ARGUMENT"
    assert TARGET in unnamed.message()


def test_grpc_bad_tensor_invalid_argument(grpc_platform: Any, served: Any) -> None:
    c = client(grpc_platform, f"iris.{NS_A}.example.com")
    tensor = grpcclient.InferInput("input-0", [2, 4], "FP32")
    tensor.set_data_from_numpy(np.zeros((2, 4), dtype=np.float32))
    tensor.set_shape([3, 4])  # the shape now says 48 bytes, the data has 32
    bad = refused(lambda: c.infer("iris", [tensor], headers=as_user(ALICE)))
    assert bad.status() == "StatusCode.INVALID_ARGUMENT"
    assert "input-0" in bad.message()


def test_grpc_message_size_bounded(grpc_platform: Any, served: Any) -> None:
    """A message over the gateway's body limit (32 MiB) is refused before it is read."""
    options = [
        ("grpc.default_authority", f"iris.{NS_A}.example.com"),
        ("grpc.max_send_message_length", -1),
    ]
    c = grpcclient.InferenceServerClient(
        f"127.0.0.1:{grpc_platform.grpc_port}", channel_args=options
    )
    big = np.zeros((33 * 1024 * 1024 // 16, 4), dtype=np.float32)
    tensor = grpcclient.InferInput("input-0", list(big.shape), "FP32")
    tensor.set_data_from_numpy(big)
    too_big = refused(lambda: c.infer("iris", [tensor], headers=as_user(ALICE)))
    assert too_big.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert "larger than" in too_big.message()


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
    c = client(grpc_platform, f"iris0.{NS_A}.example.com")
    result = infer(c, "iris0", as_user(ALICE))
    expected = served["model"].predict(np.array(SAMPLES, dtype=np.float32)).tolist()
    assert result.as_numpy(result.get_response().outputs[0].name).tolist() == expected
    (server,) = servers(grpc_platform, "iris0")
    # gRPC traffic is reported as activity: calls for three times the grace keep the server
    # up (idle, it is gone about 3 s after the last call).
    until = time.monotonic() + 6
    while time.monotonic() < until:
        infer(c, "iris0", as_user(ALICE))
        time.sleep(0.25)
    assert [s.name for s in servers(grpc_platform, "iris0")] == [server.name]


def test_grpc_port_speaks_http2_only(grpc_platform: Any, served: Any) -> None:
    """An HTTP/1.1 request on the gRPC port gets the connection closed, not an answer."""
    with socket.create_connection(("127.0.0.1", grpc_platform.grpc_port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        data = sock.recv(65536)
        while chunk := sock.recv(65536):
            data += chunk
    assert b"HTTP/1.1" not in data


# ---- the ModelInfer conversion alone (gateway/grpc_tensors.py), on tritonclient's messages:
# the same wire shapes as ours, which this process cannot import beside them.


def test_convert_typed_contents_to_rest_binary_the_model_server_reads() -> None:
    from tritonclient.grpc import service_pb2 as wire

    from gateway.grpc_tensors import rest_request
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
    from tritonclient.grpc import service_pb2 as wire

    from gateway.grpc_server import Code, GRPCError
    from gateway.grpc_tensors import rest_request

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
    from tritonclient.grpc import service_pb2 as wire

    from gateway.grpc_tensors import fill_response
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
