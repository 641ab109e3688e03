"""Kubernetes RBAC, as far as the chart's ClusterRoles need it: is a request allowed?

The API server's authorizer turns a request into attributes (API group, resource,
subresource, name, verb) and allows it if any rule of the subject's roles matches them
(https://kubernetes.io/docs/reference/access-authn-authz/authorization/#determine-the-request-verb).
This module does the same for the REST paths the Kubernetes runtime calls, so a test can
check every request the runtime sends against the ClusterRole the chart grants it. It knows
resource requests only (no nonResourceURLs) and no aggregation (the runtime's role has none).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}


@dataclass(frozen=True)
class Attributes:
    """What the authorizer decides on."""

    verb: str
    group: str
    resource: str  # with its subresource, as rules name it: "pods/log"
    namespace: str | None
    name: str | None

    def __str__(self) -> str:
        where = f" in {self.namespace}" if self.namespace else ""
        named = f" {self.name}" if self.name else ""
        group = f"{self.group}/" if self.group else ""
        return f"{self.verb} {group}{self.resource}{named}{where}"


def attributes(method: str, url: str, query: Iterable[tuple[str, str]] = ()) -> Attributes:
    """The request attributes of ``method url`` (a path, with or without its query)."""
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query)) | dict(query)
    segments = [s for s in parts.path.split("/") if s]
    if segments[:1] == ["api"]:
        group, rest = "", segments[2:]
    elif segments[:1] == ["apis"]:
        group, rest = segments[1], segments[3:]
    else:
        raise ValueError(f"not a resource request: {url}")
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":  # /namespaces/NS/RESOURCE/...
        namespace, rest = rest[1], rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else None
    if len(rest) > 2:
        resource = f"{resource}/{rest[2]}"
    if method == "GET":
        watching = params.get("watch", "").lower() in ("1", "true")
        verb = "get" if name else ("watch" if watching else "list")
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = _VERBS[method]
    return Attributes(verb, group, resource, namespace, name)


def allowed(rules: Sequence[Mapping[str, Any]], request: Attributes) -> bool:
    """True if a rule (of a ClusterRole bound cluster-wide) allows ``request``."""
    for rule in rules:
        if not {"*", request.group} & set(rule.get("apiGroups", [])):
            continue
        if not {"*", request.resource} & set(rule.get("resources", [])):
            continue
        if not {"*", request.verb} & set(rule.get("verbs", [])):
            continue
        names = rule.get("resourceNames")
        if names and request.name not in names:  # a create has no name: never allowed
            continue
        return True
    return False
