"""KServe's host form of the REST data plane: ``{name}.{namespace}.{SHIPYARD_INGRESS_DOMAIN}``.

A request whose Host names a model is served as its path form, ``/serving/{ns}/{name}{path}``
(``/graphs/...`` for an InferenceGraph that is no InferenceService's name), so everything a
path-form request gets it gets too: the same answers, the same 401/403/503, the sandbox
headers. Three layers: ``routes.host_target`` and ``fastpath.ModelHosts`` as pure functions;
the gateway in process (OIDC mode) in front of the echoing upstream of tests/gateway, which
shows the path each form reaches and that :explain still goes to the serving service; and a
platform of this module's own in OIDC mode with a real sklearn model and a real
InferenceGraph, both tenants signed in with the test provider's ID tokens.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.exceptions import InvalidStatus

from gateway.app import create_app
from gateway.fastpath import ModelHosts
from gateway.routes import host_target
from services.common.runtime import LocalRuntime
from tests import specs
from tests.conftest import ADMIN_USER, RunningSeaweedFS, create_profile, free_port
from tests.gateway.conftest import (
    OIDCServer,
    RunningServer,
    ServedGateway,
    notebook_host,
    oidc_platform,
    provider_for_platform,
    ws_connect_host,
)
from tests.serving.conftest import ready, train_sklearn

NS = "kubeflow-user-example-com"  # user@example.com's in the gateway fixture
OTHER_NS = "kubeflow-second-example-com"  # second@example.com's
SANDBOX = "sandbox"


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


# ---- the pure parts ------------------------------------------------------------------------


def test_host_target_reads_name_and_namespace() -> None:
    assert host_target("iris.team-a.example.com", "example.com") == ("team-a", "iris")
    # A port, upper case, a trailing dot (a fully qualified name), a dotted domain given
    # with dots around it: all the same host.
    assert host_target("iris.team-a.example.com:8080", "example.com") == ("team-a", "iris")
    assert host_target("IRIS.Team-A.Example.COM", "EXAMPLE.com") == ("team-a", "iris")
    assert host_target("iris.team-a.example.com.:80", ".example.com.") == ("team-a", "iris")
    assert host_target("m-1.ns.models.corp.internal", "models.corp.internal") == ("ns", "m-1")


@pytest.mark.parametrize(
    "host",
    [
        "example.com",  # the domain itself
        "team-a.example.com",  # one label
        "v2.iris.team-a.example.com",  # three labels
        "iris.team-a.example.org",  # another domain
        "iris.team-a.notexample.com",  # the domain only as the end of a label
        "iris.team_a.example.com",  # "_" is no DNS label's
        "-iris.team-a.example.com",  # nor a leading "-"
        "iris-.team-a.example.com",  # nor a trailing one
        "iris..example.com",  # an empty label
        f"{'a' * 64}.team-a.example.com",  # 64 characters: one too many
        "[::1]:8080",  # an IPv6 literal
        "",
    ],
)
def test_host_target_refuses_what_is_not_exactly_the_form(host: str) -> None:
    assert host_target(host, "example.com") is None


def test_host_target_no_domain_names_nothing() -> None:
    assert host_target("iris.team-a", "") is None
    assert host_target("iris.team-a.", ".") is None
    assert host_target(f"{'a' * 63}.team-a.example.com", "example.com") == ("team-a", "a" * 63)


def test_model_hosts_leave_notebooks_and_the_dashboard_alone() -> None:
    hosts = ModelHosts("example.com", "notebooks.localhost", "https://kubeflow.example.com")
    assert hosts.claims("iris.team-a.example.com")
    assert hosts.claims("a.b.c.example.com")  # claimed, to be answered 404 (no model)
    assert not hosts.claims("kubeflow.example.com")  # the dashboard's own host
    assert not hosts.claims("example.com") and not hosts.claims("localhost")
    assert not hosts.claims("nb.team-a.notebooks.localhost")
    # The dashboard's host is never a model's, even when it has a model host's shape.
    assert not ModelHosts("example.com", None, "http://dash.board.example.com:8080").claims(
        "dash.board.example.com"
    )
    # Notebooks keep their hosts when their domain is the ingress domain or below it ...
    same = ModelHosts("example.com", "example.com", "")
    assert not same.claims("nb.team-a.example.com")
    below = ModelHosts("example.com", "nb.example.com", "")
    assert not below.claims("jupyter.team-a.nb.example.com")
    assert not below.claims("team-a.nb.example.com")
    assert below.claims("iris.team-a.example.com")
    # ... and a more specific ingress domain keeps its own under the notebooks' domain.
    above = ModelHosts("models.example.com", "example.com", "")
    assert above.claims("iris.team-a.models.example.com")
    assert not above.claims("nb.team-a.example.com")
    # No domain: no host is a model's.
    assert not ModelHosts("", None, "").claims("iris.team-a.example.com")


# ---- the gateway in process, in front of the echoing upstream ------------------------------


@pytest.fixture
async def routed(gateway: RunningServer, upstream: RunningServer) -> AsyncIterator[Any]:
    """Routes to the echoing upstream: an InferenceService ``iris``, an InferenceGraph
    ``chain``, and ``both`` (an InferenceService and a graph of one name)."""
    table = gateway.gw.route_table  # type: ignore[attr-defined]
    entries = [
        ("inferenceservice", NS, "iris"),
        ("inferencegraph", NS, "chain"),
        ("inferenceservice", NS, "both"),
        ("inferencegraph", NS, "both"),
    ]
    for kind, ns, name in entries:
        table.upsert(kind, ns, name, [(upstream.url, 1)])
    yield table
    for kind, ns, name in entries:
        table.remove(kind, ns, name)


def model_host(gateway: RunningServer, name: str, ns: str = NS) -> str:
    return f"{name}.{ns}.example.com:{gateway.port}"


async def both_forms(
    c: httpx.AsyncClient, method: str, host: str, path: str, prefix: str, **kw: Any
) -> tuple[httpx.Response, httpx.Response]:
    """The same request by Host and by its path form."""
    headers = kw.pop("headers", {})
    by_host = await c.request(method, path, headers={**headers, "host": host}, **kw)
    by_path = await c.request(method, prefix + path, headers=headers, **kw)
    return by_host, by_path


async def test_host_form_is_the_path_form(
    gateway: RunningServer, routed: Any, oidc: Any, client: httpx.AsyncClient
) -> None:
    me = bearer(await oidc.id_token("user@example.com"))
    by_host, by_path = await both_forms(
        client,
        "POST",
        model_host(gateway, "iris"),
        "/v1/models/iris:predict",
        f"/serving/{NS}/iris",
        headers=me,
        json={"instances": [[1, 2]]},
    )
    assert by_host.status_code == by_path.status_code == 200, by_host.text
    assert by_host.json() == by_path.json()
    body = by_host.json()
    # The model server sees the path form, and none of the visitor's credentials.
    assert body["path"] == f"/serving/{NS}/iris/v1/models/iris:predict"
    assert body["identity"] is None and body["authorization"] != me["authorization"]
    assert body["body_bytes"] == len(b'{"instances":[[1,2]]}')
    assert (
        by_host.headers["content-security-policy"]
        == by_path.headers["content-security-policy"]
        == SANDBOX
    )
    # A V2 path, a query string and the host's root, all below the prefix.
    r = await client.get(
        "/v2/models/iris/ready?x=1", headers={**me, "host": model_host(gateway, "iris")}
    )
    assert r.status_code == 200 and r.json()["path"] == f"/serving/{NS}/iris/v2/models/iris/ready"
    r = await client.get("/", headers={**me, "host": model_host(gateway, "iris")})
    assert r.status_code == 200 and r.json()["path"] == f"/serving/{NS}/iris/"


async def test_host_form_of_graphs_and_shared_names(
    gateway: RunningServer, routed: Any, oidc: Any, client: httpx.AsyncClient
) -> None:
    me = bearer(await oidc.id_token("user@example.com"))
    by_host, by_path = await both_forms(
        client, "POST", model_host(gateway, "chain"), "/", f"/graphs/{NS}/chain", headers=me
    )
    assert by_host.status_code == 200 and by_host.json() == by_path.json()
    assert by_host.json()["path"] == f"/graphs/{NS}/chain/"
    assert by_host.headers["content-security-policy"] == SANDBOX
    # A name that is both: the InferenceService's.
    r = await client.post(
        "/v1/models/both:predict", headers={**me, "host": model_host(gateway, "both")}
    )
    assert r.status_code == 200 and r.json()["path"] == f"/serving/{NS}/both/v1/models/both:predict"
    # The graph alone once the InferenceService is gone (neither routed nor activatable).
    routed.remove("inferenceservice", NS, "both")
    r = await client.post("/", headers={**me, "host": model_host(gateway, "both")})
    assert r.status_code == 200 and r.json()["path"] == f"/graphs/{NS}/both/"


async def test_host_form_explain_goes_to_the_serving_service(
    gateway: RunningServer, routed: Any, oidc: Any, client: httpx.AsyncClient
) -> None:
    """The upstream stands in for every service: the serving service is the one that gets
    the gateway's signed assertion (a model server gets none)."""
    me = bearer(await oidc.id_token("user@example.com"))
    by_host, by_path = await both_forms(
        client,
        "POST",
        model_host(gateway, "iris"),
        "/v1/models/iris:explain",
        f"/serving/{NS}/iris",
        headers=me,
        json={"instances": [[1, 2]]},
    )
    assert by_host.status_code == by_path.status_code == 200
    assert by_host.json() == by_path.json()
    assert by_host.json()["identity"]["user"] == "user@example.com"
    assert by_host.json()["identity"]["namespace"] == NS


async def test_host_form_refuses_as_the_path_form(
    gateway: RunningServer, routed: Any, oidc: Any, client: httpx.AsyncClient
) -> None:
    other = bearer(await oidc.id_token("second@example.com"))
    me = bearer(await oidc.id_token("user@example.com"))
    path = "/v1/models/iris:predict"
    # Another tenant's model: the same 403, naming the same user, namespace and path.
    by_host, by_path = await both_forms(
        client, "POST", model_host(gateway, "iris"), path, f"/serving/{NS}/iris", headers=other
    )
    assert by_host.status_code == by_path.status_code == 403
    assert by_host.json() == by_path.json()
    assert "second@example.com" in by_host.json()["message"]
    assert by_host.headers["content-security-policy"] == SANDBOX
    # A token that is no token: the same 401.
    bogus = {"authorization": "Bearer x.y.z"}
    by_host, by_path = await both_forms(
        client, "GET", model_host(gateway, "iris"), path, f"/serving/{NS}/iris", headers=bogus
    )
    assert by_host.status_code == by_path.status_code == 401
    assert by_host.json() == by_path.json()
    # Nobody signed in: a 401 too (the path form sends a browser to sign in; a model host
    # has no sign-in page of its own to send it to).
    r = await client.get(path, headers={"host": model_host(gateway, "iris")})
    assert r.status_code == 401 and r.json()["reason"] == "Unauthorized", r.text
    assert "authentication required" in r.json()["message"]
    r = await client.get(f"/serving/{NS}/iris{path}")
    assert r.status_code == 302 and r.headers["location"].startswith("/oauth2/start?rd=")
    # An unknown model: the same 503 (after the route grace).
    by_host, by_path = await both_forms(
        client, "POST", model_host(gateway, "nope"), path, f"/serving/{NS}/nope", headers=me
    )
    assert by_host.status_code == by_path.status_code == 503
    assert by_host.json() == by_path.json()
    assert f"inferenceservice {NS}/nope has no live endpoint" in by_host.json()["message"]


@pytest.mark.parametrize(
    "host",
    ["v2.iris.{ns}.example.com", "{ns}.example.com", "Bad_Name.{ns}.example.com"],
)
async def test_malformed_model_host_404_says_the_form(
    gateway: RunningServer, routed: Any, oidc: Any, client: httpx.AsyncClient, host: str
) -> None:
    me = bearer(await oidc.id_token("user@example.com"))
    r = await client.post("/v1/models/iris:predict", headers={**me, "host": host.format(ns=NS)})
    assert r.status_code == 404, r.text
    message = r.json()["message"]
    assert message.startswith(host.format(ns=NS).lower() + " names no model")
    assert "{name}.{namespace}.example.com" in message
    assert r.json()["reason"] == "NotFound"
    assert r.headers["content-security-policy"] == SANDBOX


async def test_malformed_model_host_refuses_websockets(
    gateway: RunningServer, upstream: RunningServer, oidc: Any
) -> None:
    """A notebook's WebSocket that opens on the gateway's host is closed unaccepted (HTTP
    403) on a malformed model host, before anything behind the gateway hears of it."""
    me = bearer(await oidc.id_token("user@example.com"))
    table = gateway.gw.route_table  # type: ignore[attr-defined]
    table.upsert("notebook", NS, "wsnb", [(upstream.url, 1)])
    path = f"/notebook/{NS}/wsnb/ws"
    try:
        async with ws_connect_host(gateway, f"127.0.0.1:{gateway.port}", path, me) as ws:
            assert json.loads(await ws.recv())["identity"] is None  # opened and proxied
            await ws.send("bye")
        host = f"v2.iris.{NS}.example.com:{gateway.port}"
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect_host(gateway, host, path, me):
                pass
        assert refused.value.response.status_code == 403
    finally:
        table.remove("notebook", NS, "wsnb")


async def test_other_hosts_are_unchanged(
    gateway: RunningServer, routed: Any, oidc: Any, client: httpx.AsyncClient
) -> None:
    me = bearer(await oidc.id_token("user@example.com"))
    api = f"/apis/kubeflow.org/v1/namespaces/{NS}/notebooks"
    for host in (f"127.0.0.1:{gateway.port}", f"localhost:{gateway.port}", "example.com"):
        r = await client.get(api, headers={**me, "host": host})
        assert r.status_code == 200, (host, r.text)
        assert r.json()["path"] == api and r.json()["identity"]["user"] == "user@example.com"
        assert "content-security-policy" not in r.headers
    # A notebook's origin is still the notebook's: the API is no page of it.
    r = await client.get(api, headers={**me, "host": notebook_host(gateway, NS, "nb")})
    assert r.status_code == 404 and f"/notebook/{NS}/nb/" in r.json()["message"]


async def test_ingress_domain_beside_the_notebook_domain(
    upstream: RunningServer, oidc: Any, oidc_settings: Callable[..., Any]
) -> None:
    """The notebooks' domain is ``notebooks.localhost`` (no public URL). The same ingress
    domain: every two-label host there stays a notebook's. An ingress domain below it: its
    hosts are the models', though a notebook host could be read into them too."""
    me = bearer(await oidc.id_token("user@example.com"))
    for ingress, host, expected in (
        ("notebooks.localhost", f"nb.{NS}.notebooks.localhost", None),
        ("m.notebooks.localhost", f"nb.{NS}.m.notebooks.localhost", f"/serving/{NS}/nb/"),
    ):
        server = ServedGateway(create_app(oidc_settings(ingress_domain=ingress)), free_port())
        await server.start()
        try:
            gw = server.server.config.app.state.gw  # type: ignore[union-attr]
            await gw.store.ensure_profile(NS, "user@example.com")
            gw.route_table.upsert("inferenceservice", NS, "nb", [(upstream.url, 1)])
            async with httpx.AsyncClient(base_url=server.url, timeout=15) as c:
                r = await c.post("/", headers={**me, "host": f"{host}:{server.port}"})
            if expected is None:
                assert r.status_code == 404 and f"/notebook/{NS}/nb/" in r.json()["message"]
            else:
                assert r.status_code == 200 and r.json()["path"] == expected, r.text
        finally:
            await server.stop()


# ---- a platform in OIDC mode, a real sklearn model and a real InferenceGraph ---------------

ALICE, BOB = "user@example.com", "second@example.com"  # the test provider's users
NS_A, NS_B = "hosts-a", "hosts-b"
DOMAIN = "models.shipyard.test"
SAMPLES = [[5.0, 3.4, 1.5, 0.2], [5.9, 2.8, 4.3, 1.3], [6.6, 3.0, 5.6, 2.0]]
TOKENS: dict[str, str] = {}


def as_user(user: str) -> dict[str, str]:
    return bearer(TOKENS[user])


@pytest.fixture(scope="module")
def hosts_oidc() -> Iterator[OIDCServer]:
    with provider_for_platform() as server:
        yield server


@pytest.fixture(scope="module")
def hosts_platform(
    nats_url: str,
    seaweedfs: RunningSeaweedFS,
    hosts_oidc: OIDCServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Any]:
    """The platform in OIDC mode with the ingress domain ``DOMAIN``; alice owns ``NS_A``,
    bob ``NS_B``."""
    for user in (ALICE, BOB, ADMIN_USER):
        TOKENS[user] = asyncio.run(hosts_oidc.id_token(user))
    with oidc_platform(
        tmp_path_factory.mktemp("hosts-platform"),
        "shipyard_hosts",
        hosts_oidc,
        nats_url=nats_url,
        s3=seaweedfs.config,
        env={"SHIPYARD_INGRESS_DOMAIN": DOMAIN},
    ) as platform:
        with httpx.Client(base_url=platform.gateway_url, timeout=30) as api:
            api.headers.update(as_user(ADMIN_USER))
            create_profile(api, NS_A, ALICE)
            create_profile(api, NS_B, BOB)
        yield platform


def wait_ready(api: httpx.Client, path: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    obj: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = api.get(path)
        assert r.status_code == 200, r.text
        obj = r.json()
        if ready(obj):
            return obj
        time.sleep(0.2)
    raise AssertionError(f"{path} is not ready: {obj.get('status')}")


@pytest.fixture(scope="module")
def served(hosts_platform: Any) -> Iterator[dict[str, Any]]:
    """In ``NS_A``: the sklearn InferenceService ``iris`` (V2), and the InferenceGraphs
    ``ens`` and ``iris`` (an Ensemble of one step, ``a``, calling iris); the trained model."""
    with httpx.Client(base_url=hosts_platform.gateway_url, timeout=30) as api:
        api.headers.update(as_user(ALICE))
        r = api.post(f"/api/v1/namespaces/{NS_A}/persistentvolumeclaims", json=specs.claim("m"))
        assert r.status_code == 201, r.text
        claim = f"/api/v1/namespaces/{NS_A}/persistentvolumeclaims/m"
        deadline = time.monotonic() + 20
        while (api.get(claim).json().get("status") or {}).get("phase") != "Bound":
            assert time.monotonic() < deadline, "the claim never bound"
            time.sleep(0.1)
        data = asyncio.run(LocalRuntime(hosts_platform.state_dir).resolve_volume(NS_A, "m"))
        model = train_sklearn(data / "iris")
        isvcs = f"/apis/serving.kserve.io/v1beta1/namespaces/{NS_A}/inferenceservices"
        predictor = {
            "model": {
                "modelFormat": {"name": "sklearn"},
                "protocolVersion": "v2",
                "storageUri": "pvc://m/iris",
            }
        }
        body = {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {"name": "iris"},
            "spec": {"predictor": predictor},
        }
        r = api.post(isvcs, json=body)
        assert r.status_code == 201, r.text
        isvc = wait_ready(api, f"{isvcs}/iris")
        graphs = f"/apis/serving.kserve.io/v1alpha1/namespaces/{NS_A}/inferencegraphs"
        for name in ("ens", "iris"):
            graph = {
                "apiVersion": "serving.kserve.io/v1alpha1",
                "kind": "InferenceGraph",
                "metadata": {"name": name},
                "spec": {
                    "nodes": {
                        "root": {
                            "routerType": "Ensemble",
                            "steps": [{"serviceName": "iris", "name": "a"}],
                        }
                    }
                },
            }
            r = api.post(graphs, json=graph)
            assert r.status_code == 201, r.text
        for name in ("ens", "iris"):
            wait_ready(api, f"{graphs}/{name}")
        yield {"model": model, "isvc": isvc}


def v2_body() -> dict[str, Any]:
    x = np.array(SAMPLES, dtype=np.float64)
    return {
        "inputs": [
            {
                "name": "input-0",
                "shape": list(x.shape),
                "datatype": "FP64",
                "data": x.ravel().tolist(),
            }
        ]
    }


def call(platform: Any, path: str, *, host: str | None = None, **kw: Any) -> httpx.Response:
    """POST to the gateway, by ``host`` when given (its address stays 127.0.0.1)."""
    headers = {**kw.pop("headers", {}), **({"host": host} if host else {})}
    with httpx.Client(base_url=platform.gateway_url, timeout=60) as c:
        return c.post(path, headers=headers, **kw)


def test_real_model_by_host_answers_as_by_path(hosts_platform: Any, served: Any) -> None:
    me, host = as_user(ALICE), f"iris.{NS_A}.{DOMAIN}"
    expected = served["model"].predict(np.array(SAMPLES)).tolist()
    # KServe V1 predict.
    v1 = {"instances": SAMPLES}
    by_host = call(hosts_platform, "/v1/models/iris:predict", host=host, headers=me, json=v1)
    by_path = call(
        hosts_platform, f"/serving/{NS_A}/iris/v1/models/iris:predict", headers=me, json=v1
    )
    assert by_host.status_code == by_path.status_code == 200, by_host.text
    assert by_host.json() == by_path.json() == {"predictions": expected}
    assert by_host.headers["content-security-policy"] == SANDBOX
    # Open Inference Protocol V2 infer, with the port of the gateway in the Host header.
    port = httpx.URL(hosts_platform.gateway_url).port
    by_host = call(
        hosts_platform, "/v2/models/iris/infer", host=f"{host}:{port}", headers=me, json=v2_body()
    )
    by_path = call(
        hosts_platform, f"/serving/{NS_A}/iris/v2/models/iris/infer", headers=me, json=v2_body()
    )
    assert by_host.status_code == by_path.status_code == 200, by_host.text
    assert by_host.json() == by_path.json()
    assert by_host.json()["outputs"][0]["data"] == expected


def test_real_graph_by_host_and_isvc_wins_shared_name(hosts_platform: Any, served: Any) -> None:
    me = as_user(ALICE)
    by_host = call(hosts_platform, "/", host=f"ens.{NS_A}.{DOMAIN}", headers=me, json=v2_body())
    by_path = call(hosts_platform, f"/graphs/{NS_A}/ens", headers=me, json=v2_body())
    assert by_host.status_code == by_path.status_code == 200, by_host.text
    assert by_host.json() == by_path.json()
    expected = served["model"].predict(np.array(SAMPLES)).tolist()
    assert by_host.json()["a"]["outputs"][0]["data"] == expected
    # ``iris`` is an InferenceService and a graph: the host is the InferenceService's.
    shared = call(
        hosts_platform,
        "/v2/models/iris/infer",
        host=f"iris.{NS_A}.{DOMAIN}",
        headers=me,
        json=v2_body(),
    )
    assert shared.status_code == 200, shared.text
    assert "a" not in shared.json() and shared.json()["outputs"][0]["data"] == expected


def test_real_platform_refusals_by_host(hosts_platform: Any, served: Any) -> None:
    path = "/v1/models/iris:predict"
    v1 = {"instances": SAMPLES}
    # Bob, by host and by path, into alice's namespace: the same 403.
    by_host = call(
        hosts_platform, path, host=f"iris.{NS_A}.{DOMAIN}", headers=as_user(BOB), json=v1
    )
    by_path = call(hosts_platform, f"/serving/{NS_A}/iris{path}", headers=as_user(BOB), json=v1)
    assert by_host.status_code == by_path.status_code == 403, by_host.text
    assert by_host.json() == by_path.json()
    assert BOB in by_host.json()["message"] and NS_A in by_host.json()["message"]
    # An unknown name: the path form's 503, in the same words.
    by_host = call(
        hosts_platform, path, host=f"nope.{NS_A}.{DOMAIN}", headers=as_user(ALICE), json=v1
    )
    by_path = call(hosts_platform, f"/serving/{NS_A}/nope{path}", headers=as_user(ALICE), json=v1)
    assert by_host.status_code == by_path.status_code == 503, by_host.text
    assert by_host.json() == by_path.json()
    # A host under the domain of another shape: 404 saying the form.
    r = call(hosts_platform, path, host=f"v1.iris.{NS_A}.{DOMAIN}", headers=as_user(ALICE), json=v1)
    assert r.status_code == 404, r.text
    assert f"{{name}}.{{namespace}}.{DOMAIN}" in r.json()["message"]
    # The gateway's own host: the API as ever.
    with httpx.Client(base_url=hosts_platform.gateway_url, timeout=30) as api:
        r = api.get(
            f"/apis/serving.kserve.io/v1beta1/namespaces/{NS_A}/inferenceservices/iris",
            headers=as_user(ALICE),
        )
    assert r.status_code == 200 and r.json()["metadata"]["name"] == "iris"
