"""The route table: which upstream serves a path, and which namespace the path names.

The static part is data (``STATIC_ROUTES``), matched in order by regular expression; the
dynamic part (``RouteTable``) maps a notebook or inference service to its live server
endpoints, fed by resource events and warm-started from the services' list endpoints.
"""

from __future__ import annotations

import functools
import logging
import random
import re
import threading
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

NS = r"(?P<ns>[a-z0-9]([-a-z0-9]*[a-z0-9])?)"
#: An RFC 1123 label, as Kubernetes names namespaces (and KServe's host names use them).
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class Route:
    """One prefix rule: ``target`` is a service name, ``gateway``, or a dynamic kind."""

    pattern: re.Pattern[str]
    target: str
    dynamic_kind: str | None = None
    # Readable (GET) by any signed-in user, whatever their namespaces: API descriptions.
    any_user: bool = False


def _r(
    regex: str, target: str, dynamic_kind: str | None = None, *, any_user: bool = False
) -> Route:
    return Route(re.compile(regex), target, dynamic_kind, any_user)


# Order matters: the first match wins. Gateway-owned paths are served by its own routers and
# never reach the proxy; they are listed so `resolve` gives a complete answer.
STATIC_ROUTES: tuple[Route, ...] = (
    # Kubernetes discovery (gateway.discovery), for any signed-in user: exactly /version, /api,
    # /api/v1, /apis, /apis/{group} and /apis/{group}/{version} (a group has a dot, so KFP's
    # /apis/v2beta1/... is not one); what lies below a group/version stays with its service.
    _r(r"^/(version|api|apis)$", "gateway", any_user=True),
    _r(r"^/api/v1$", "gateway", any_user=True),
    _r(r"^/apis/[^/.]+(\.[^/.]+)+(/[^/]+)?$", "gateway", any_user=True),
    _r(r"^/apis/kubeflow\.org/v1/profiles(/|$)", "gateway"),
    _r(r"^/oauth2/", "gateway"),
    # Each service's OpenAPI document, for any signed-in user (clients and fuzzers load it).
    _r(r"^/openapi/notebook\.json$", "notebook", any_user=True),
    _r(r"^/openapi/automl\.json$", "automl", any_user=True),
    _r(r"^/openapi/pipeline\.json$", "pipeline", any_user=True),
    _r(r"^/openapi/serving\.json$", "serving", any_user=True),
    _r(r"^/api/workgroup/", "gateway"),
    _r(r"^/kfam/v1/", "gateway"),
    _r(rf"^/api/v1/namespaces/{NS}/persistentvolumeclaims(/|$|\?)", "notebook"),
    _r(r"^/api/v1/persistentvolumeclaims$", "notebook"),
    _r(rf"^/api/v1/namespaces/{NS}/configmaps(/|$|\?)", "automl"),
    _r(r"^/api/v1/configmaps$", "automl"),
    # Secrets and ServiceAccounts: served by serving, their one consumer (storageUri credentials).
    # TokenRequest (a service account's token) is the gateway's own; the objects are serving's.
    _r(rf"^/api/v1/namespaces/{NS}/serviceaccounts/[^/]+/token$", "gateway"),
    _r(rf"^/api/v1/namespaces/{NS}/(secrets|serviceaccounts)(/|$|\?)", "serving"),
    _r(r"^/api/v1/(secrets|serviceaccounts)$", "serving"),
    _r(rf"^/apis/kubeflow\.org/v1/namespaces/{NS}/pytorchjobs(/|$)", "automl"),
    _r(r"^/apis/kubeflow\.org/v1/pytorchjobs$", "automl"),
    _r(rf"^/apis/kubeflow\.org/v1/namespaces/{NS}/notebooks(/|$)", "notebook"),
    _r(r"^/apis/kubeflow\.org/v1/notebooks$", "notebook"),
    _r(rf"^/apis/kubeflow\.org/v1alpha1/namespaces/{NS}/poddefaults(/|$)", "notebook"),
    _r(r"^/apis/kubeflow\.org/v1alpha1/poddefaults$", "notebook"),
    # The Jupyter web app's backend (services/notebook/jwa.py): its configuration for anyone
    # signed in, everything else in the namespace the path names.
    _r(r"^/jupyter/api/(config|gpus|storageclasses(/default)?)$", "notebook", any_user=True),
    _r(rf"^/jupyter/api/namespaces/{NS}/", "notebook"),
    _r(rf"^/apis/kubeflow\.org/v1beta1/namespaces/{NS}/", "automl"),
    _r(r"^/apis/kubeflow\.org/v1beta1/", "automl"),
    _r(rf"^/apis/argoproj\.io/v1alpha1/namespaces/{NS}/", "pipeline"),
    _r(r"^/apis/argoproj\.io/", "pipeline"),
    _r(r"^/apis/v2beta1/", "pipeline"),
    _r(rf"^/api/v1/(workflows|cron-workflows|workflow-templates)/{NS}(/|$)", "pipeline"),
    _r(r"^/api/v1/(workflows|cron-workflows|workflow-templates)(/|$)", "pipeline"),
    # The Argo Server's artifact downloads (streamed through the proxy, as every response).
    _r(rf"^/(artifact-files|artifacts|input-artifacts)/{NS}/", "pipeline"),
    _r(rf"^/apis/serving\.kserve\.io/v1beta1/namespaces/{NS}/", "serving"),
    _r(rf"^/apis/serving\.kserve\.io/v1alpha1/namespaces/{NS}/inferencegraphs(/|$)", "serving"),
    # KServe's runtimes: a namespace's ServingRuntimes, and the ClusterServingRuntimes every
    # signed-in user may read (which servers exist); writing one takes a cluster admin.
    _r(rf"^/apis/serving\.kserve\.io/v1alpha1/namespaces/{NS}/servingruntimes(/|$)", "serving"),
    _r(
        r"^/apis/serving\.kserve\.io/v1alpha1/clusterservingruntimes(/|$)",
        "serving",
        any_user=True,
    ),
    _r(r"^/apis/serving\.kserve\.io/", "serving"),
    # KFServing's group: the same InferenceServices (services/serving/kfserving.py).
    _r(rf"^/apis/serving\.kubeflow\.org/v1beta1/namespaces/{NS}/", "serving"),
    _r(r"^/apis/serving\.kubeflow\.org/", "serving"),
    _r(rf"^/notebook/{NS}/(?P<name>[^/]+)(/|$)", "dynamic", "notebook"),
    # V1 :explain goes to the serving service, which passes it to the InferenceService's
    # explainer or answers 501 (services/serving/explain.py), as KServe's ingress routes it.
    _r(rf"^/serving/{NS}/(?P<name>[^/]+)/v1/models/[^/]+:explain$", "serving"),
    _r(rf"^/serving/{NS}/(?P<name>[^/]+)(/|$)", "dynamic", "inferenceservice"),
    # An InferenceGraph's router (services/serving/router), KServe's
    # http://{graph}.{ns}.{domain} as a path of its own: graphs and InferenceServices
    # are named apart, so the same name may be both.
    _r(rf"^/graphs/{NS}/(?P<name>[^/]+)(/|$)", "dynamic", "inferencegraph"),
    _r(rf"^/apis/kubeflow\.org/v1/namespaces/{NS}/", "notebook"),
)


@dataclass(frozen=True)
class Match:
    route: Route
    namespace: str | None
    name: str | None

    @property
    def target(self) -> str:
        return self.route.target

    @property
    def data_plane(self) -> bool:
        return self.route.dynamic_kind is not None


@functools.lru_cache(maxsize=4096)
def resolve(path: str) -> Match | None:
    """The first static route matching ``path``, with the namespace it names (if any).

    Cached: the routes are fixed and a Match is immutable, and the data planes repeat the
    same few paths (the regular expressions are tried in order, ~50 of them)."""
    for route in STATIC_ROUTES:
        m = route.pattern.match(path)
        if m:
            groups = m.groupdict()
            return Match(route, groups.get("ns"), groups.get("name"))
    return None


@functools.lru_cache(maxsize=4096)
def host_target(host: str, domain: str) -> tuple[str, str] | None:
    """(namespace, name) that a Host header (or gRPC ``:authority``) names as KServe's
    ``{name}.{namespace}.{domain}``, or None when it is not exactly that.

    The port is ignored, case too (host names are case-insensitive), and so is one trailing
    dot (a fully qualified name); name and namespace must be DNS labels, and there must be
    exactly two labels before the domain. An IPv6 literal never names a model. One parser
    for REST (``gateway.fastpath``) and gRPC (``gateway.grpc_inference``), so both read a
    host the same way. Cached: clients repeat the same few hosts.
    """
    value = host.strip().lower()
    domain = domain.strip().strip(".").lower()
    if not domain or value.startswith("["):
        return None
    value = value.partition(":")[0].removesuffix(".")
    suffix = "." + domain
    if not value.endswith(suffix):
        return None
    labels = value[: -len(suffix)].split(".")
    if len(labels) != 2 or not all(DNS_LABEL.match(label) for label in labels):
        return None
    name, namespace = labels
    return namespace, name


Target = tuple[str, int]


class RouteTable:
    """Live endpoints of notebook servers and inference services, with weighted targets.

    Weights implement canary splits (e.g. 90/10 between the default and canary predictor).
    Objects that can be started on demand (``minReplicas: 0``) are *activatable*: with no
    live target, a request for them is held rather than refused (gateway.activation), unless
    the object reports why it cannot start (``failure``).
    """

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str, str], list[Target]] = {}
        self._activatable: dict[tuple[str, str, str], str | None] = {}
        self._lock = threading.Lock()

    def set_activatable(
        self, kind: str, ns: str, name: str, activatable: bool, failure: str | None = None
    ) -> None:
        self._set_or_drop(self._activatable, (kind, ns, name), failure, activatable)

    def activatable(self, kind: str, ns: str, name: str) -> bool:
        return (kind, ns, name) in self._activatable

    def failure(self, kind: str, ns: str, name: str) -> str | None:
        """Why an activatable object cannot start, as its status says (None: it can)."""
        return self._activatable.get((kind, ns, name))

    def upsert(self, kind: str, ns: str, name: str, targets: list[Target]) -> None:
        clean = [(url.rstrip("/"), int(w)) for url, w in targets if url and int(w) > 0]
        self._set_or_drop(self._routes, (kind, ns, name), clean, bool(clean))

    def _set_or_drop(
        self,
        table: dict[tuple[str, str, str], Any],
        key: tuple[str, str, str],
        value: Any,
        keep: bool,
    ) -> None:
        """``table[key] = value`` if ``keep``, else no entry for ``key``."""
        with self._lock:
            if keep:
                table[key] = value
            else:
                table.pop(key, None)

    def remove(self, kind: str, ns: str, name: str) -> None:
        with self._lock:
            self._routes.pop((kind, ns, name), None)
            self._activatable.pop((kind, ns, name), None)

    def host_kind(self, ns: str, name: str) -> str:
        """The data plane a host ``{name}.{ns}.{domain}`` reaches: ``inferencegraph`` when
        the table routes a graph of that name and knows no InferenceService of it (routed,
        or activatable from zero); else ``inferenceservice``, so that an InferenceService
        wins a shared name and an unknown name gets the path form's answer (503)."""
        key = ("inferenceservice", ns, name)
        with self._lock:
            if key in self._routes or key in self._activatable:
                return "inferenceservice"
            if ("inferencegraph", ns, name) in self._routes:
                return "inferencegraph"
        return "inferenceservice"

    def targets(self, kind: str, ns: str, name: str) -> list[Target]:
        return list(self._routes.get((kind, ns, name), ()))

    def pick(self, kind: str, ns: str, name: str, rng: random.Random | None = None) -> str | None:
        """One target URL chosen by weight, or None when nothing is live."""
        targets = self._routes.get((kind, ns, name))
        if not targets:
            return None
        if len(targets) == 1:
            return targets[0][0]
        total = sum(w for _, w in targets)
        point = (rng or random).uniform(0, total)
        for url, weight in targets:
            point -= weight
            if point <= 0:
                return url
        return targets[-1][0]


def targets_from_object(kind: str, obj: dict[str, Any]) -> list[Target]:
    """Read a resource's live endpoints from its status.

    Notebook: ``status.url`` (or ``status.endpoint``). InferenceService: ``status.components``
    ``{predictor: {url, latestRolledoutRevision...}}`` with ``spec.predictor.canaryTrafficPercent``
    splitting between ``status.components.predictor.url`` and a canary URL when present, else
    ``status.url``/``status.address.url``; a revision with several ready replicas lists them
    in ``endpoints``/``latestEndpoints``. InferenceGraph: ``status.endpoints`` (its routers),
    else ``status.endpoint``. Endpoints are the runtime's opaque URLs
    (``http://`` or ``http+sandbox://``); the proxy opens either through
    ``services.common.runtime.endpoint``.
    """
    status = obj.get("status") or {}
    if kind == "inferencegraph":  # its routers' endpoints; status.url is the gateway's own
        routers = status.get("endpoints") or [status.get("endpoint")]
        return [(url, 100) for url in routers if url]
    if kind == "inferenceservice":
        components = status.get("components") or {}
        if "transformer" in components:  # a transformer takes the service's traffic
            front = components["transformer"] or {}
            # Its serving replicas; none (starting, or replaced after a change): nothing is
            # live, and the request waits as for a start from zero. Never the predictor,
            # whose server answers only under {name}-predictor then.
            return [(url, 100) for url in front.get("endpoints") or [front.get("endpoint")] if url]
        spec = obj.get("spec") or {}
        canary_pct = (spec.get("predictor") or {}).get("canaryTrafficPercent")
        pred = (status.get("components") or {}).get("predictor") or {}
        if "desiredReplicas" in pred and not pred.get("endpoint"):
            return []  # scaled to zero, draining or starting again: nothing is live
        stable = pred.get("previousRolledoutEndpoint") or pred.get("endpoint")
        canary = pred.get("canaryEndpoint") or pred.get("latestEndpoint")
        # Each revision's share is spread evenly over its ready replicas (``endpoints``).
        stables = pred.get("endpoints") or [stable]
        canaries = pred.get("latestEndpoints") or [canary]
        if canary_pct is not None and stable and canary and stable != canary:
            pct = max(0, min(100, int(canary_pct)))
            per_stable = (100 - pct) * len(canaries)
            per_canary = pct * len(stables)
            return [(u, per_stable) for u in stables] + [(u, per_canary) for u in canaries]
        if len(stables) > 1:
            return [(u, 100) for u in stables]
        url = (
            status.get("endpoint")
            or pred.get("endpoint")
            or status.get("url")
            or ((status.get("address") or {}).get("url"))
        )
        return [(url, 100)] if url else []
    url = status.get("endpoint") or status.get("url")
    return [(url, 100)] if url else []


def predictor_route(obj: dict[str, Any]) -> list[Target]:
    """The predictor's targets while a transformer fronts an InferenceService: the data plane
    of ``{name}-predictor`` that the transformer calls (KServe's ``{name}-predictor`` host).
    Empty without a transformer or a live predictor."""
    status = obj.get("status") or {}
    components = status.get("components") or {}
    if not components.get("transformer") or not (components.get("predictor") or {}).get("endpoint"):
        return []
    alone = {k: v for k, v in components.items() if k != "transformer"}
    return targets_from_object(
        "inferenceservice", {**obj, "status": {**status, "components": alone}}
    )


def _revision_failure(obj: dict[str, Any]) -> str | None:
    """The message of a ``PredictorReady`` condition that failed for good (RevisionFailed)."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PredictorReady" and cond.get("reason") == "RevisionFailed":
            return str(cond.get("message") or "the model server failed")
    return None


class RouteFeeder:
    """Applies resource objects (from events or list endpoints) to a RouteTable."""

    KINDS = {
        "notebook": "notebook",
        "inferenceservice": "inferenceservice",
        "inferencegraph": "inferencegraph",
    }

    def __init__(self, table: RouteTable) -> None:
        self.table = table
        #: InferenceServices whose predictor has a route of its own (``{name}-predictor``).
        self._fronted: set[tuple[str, str]] = set()

    def apply(self, kind: str, obj: dict[str, Any], deleted: bool = False) -> None:
        meta = obj.get("metadata") or {}
        ns, name = meta.get("namespace"), meta.get("name")
        if not ns or not name:
            return
        if deleted or meta.get("deletionTimestamp"):
            self.table.remove(kind, ns, name)
            if kind == "inferenceservice":
                self._front(ns, name, [])
            return
        self.table.upsert(kind, ns, name, targets_from_object(kind, obj))
        if kind == "inferenceservice":
            self._front(ns, name, predictor_route(obj))
            predictor = (obj.get("spec") or {}).get("predictor") or {}
            self.table.set_activatable(
                kind, ns, name, predictor.get("minReplicas") == 0, _revision_failure(obj)
            )

    def _front(self, ns: str, name: str, targets: list[Target]) -> None:
        """Route ``{name}-predictor`` to the predictor while a transformer fronts it; drop
        the route (only one this feeder set) once none does."""
        if targets:
            self._fronted.add((ns, name))
            self.table.upsert("inferenceservice", ns, f"{name}-predictor", targets)
        elif (ns, name) in self._fronted:
            self._fronted.discard((ns, name))
            self.table.remove("inferenceservice", ns, f"{name}-predictor")

    def apply_event(self, subject: str, obj: dict[str, Any]) -> None:
        """Apply one event; subject ``shipyard.<service>.<kind>.<event>``."""
        parts = subject.split(".")
        if len(parts) < 4 or parts[2] not in self.KINDS:
            return
        self.apply(parts[2], obj, deleted=parts[3] in ("deleted", "removed"))
