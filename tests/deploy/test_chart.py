"""charts/shipyard renders to consistent Kubernetes objects.

There is no helm binary here. The chart is written in a small Go-template subset and
rendered by tests/deploy/gotemplate.py (a stand-in for `helm template`; anything outside
the subset fails loudly). On top of rendering, every `.Values` reference in every template,
including branches not taken, is checked against values.yaml, and every object rendered is
validated against the Kubernetes 1.37 schemas (kubernetes-validate, strict: an unknown field
is an error).

What this shows is that the manifests are well-formed for 1.37 and wired consistently (names,
labels, selectors, RBAC subjects, the policies' effect as NetworkPolicy defines it). What it
cannot show is a cluster acting on them: admission (Pod Security), the RBAC authorizer, a CNI
enforcing the NetworkPolicies, pulling the image. docs/kubernetes.md says how to check those.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from shipyard.up import DEFAULT_MODULES, DEFAULT_PORTS, SERVICES
from tests.deploy import rbac
from tests.deploy.gotemplate import TemplateError, render

CHART = Path(__file__).resolve().parents[2] / "charts" / "shipyard"
RELEASE = "sy"
NAMESPACE = "shipyard"
KUBERNETES_VERSION = "1.37"


def _values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def _render_chart(values: dict[str, Any]) -> list[dict[str, Any]]:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    context = {
        "Values": values,
        "Release": {"Name": RELEASE, "Namespace": NAMESPACE},
        "Chart": {"Name": chart["name"], "Version": chart["version"]},
    }
    docs: list[dict[str, Any]] = []
    for template in sorted((CHART / "templates").glob("*.yaml")):
        text = render(template.read_text(), context)
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def _by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _settings(docs: list[dict[str, Any]]) -> dict[str, str]:
    return _by_kind(docs, "ConfigMap")[f"{RELEASE}-settings"]["data"]


def _secret(docs: list[dict[str, Any]]) -> dict[str, str]:
    return _by_kind(docs, "Secret")[f"{RELEASE}-secrets"]["stringData"]


def test_chart_values_references_exist() -> None:
    values = _values()
    refs = set()
    for template in (CHART / "templates").glob("*.yaml"):
        refs |= set(re.findall(r"\.Values((?:\.\w+)+)", template.read_text()))
    assert refs
    for ref in sorted(refs):
        node: Any = values
        for key in ref.strip(".").split("."):
            assert isinstance(node, dict) and key in node, f".Values{ref} not in values.yaml"
            node = node[key]


def test_chart_renders_gateway_and_services() -> None:
    docs = _render_chart(_values())
    deployments, services = _by_kind(docs, "Deployment"), _by_kind(docs, "Service")
    assert set(deployments) == set(services) == {f"{RELEASE}-{n}" for n in DEFAULT_MODULES}
    settings = _settings(docs)
    for name, module in DEFAULT_MODULES.items():
        port = DEFAULT_PORTS[name]
        (container,) = deployments[f"{RELEASE}-{name}"]["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["python", "-m", module]
        grpc = [{"name": "grpc", "containerPort": 8081}] if name == "gateway" else []
        assert container["ports"] == [{"name": "http", "containerPort": port}, *grpc]
        assert {"name": "SHIPYARD_PORT", "value": str(port)} in container["env"]
        refs = {next(iter(r.values()))["name"] for r in container["envFrom"]}
        assert refs == {f"{RELEASE}-settings", f"{RELEASE}-secrets"}
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        startup = container["startupProbe"]
        assert startup["httpGet"]["path"] == "/healthz"
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # migrations
        assert services[f"{RELEASE}-{name}"]["spec"]["ports"][0]["port"] == port
        selector = services[f"{RELEASE}-{name}"]["spec"]["selector"]
        pod_labels = deployments[f"{RELEASE}-{name}"]["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= pod_labels.items()
        if name in SERVICES:
            assert settings[f"SHIPYARD_{name.upper()}_URL"] == f"http://{RELEASE}-{name}:{port}"
    assert settings["SHIPYARD_GATEWAY_PORT"] == "8080"
    assert settings["SHIPYARD_HOST"] == "0.0.0.0"
    # gRPC inference (gateway/grpc_inference.py): h2c on its own port of the gateway's Service.
    grpc_port = services[f"{RELEASE}-gateway"]["spec"]["ports"][1]
    assert grpc_port == {
        "name": "grpc",
        "port": 8081,
        "targetPort": "grpc",
        "appProtocol": "kubernetes.io/h2c",
    }


def test_chart_keys_secret_mounted() -> None:
    values = _values()
    docs = _render_chart(values)
    secrets = _by_kind(docs, "Secret")
    assert set(secrets[f"{RELEASE}-identity"]["stringData"]) == {
        "gateway.key",
        "gateway.pub",
        "serviceaccounts.key",
        "serviceaccounts.pub",
    }
    settings = _settings(docs)
    for name, deployment in _by_kind(docs, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        (keys,) = [v for v in pod["volumes"] if v["name"] == "keys"]
        assert keys["secret"]["secretName"] == f"{RELEASE}-identity"
        mount = pod["containers"][0]["volumeMounts"][0]
        assert settings["SHIPYARD_GATEWAY_PUBLIC_KEY_FILE"].startswith(mount["mountPath"])
        assert settings["SHIPYARD_SERVICEACCOUNT_KEY_FILE"].startswith(mount["mountPath"])
        if name != f"{RELEASE}-gateway":  # services never see the gateway's private key
            assert keys["secret"]["items"] == [
                {"key": "gateway.pub", "path": "gateway.pub"},
                {"key": "serviceaccounts.key", "path": "serviceaccounts.key"},
            ]

    values["identity"]["existingSecret"] = "my-keys"
    docs = _render_chart(values)
    assert f"{RELEASE}-identity" not in _by_kind(docs, "Secret")
    for deployment in _by_kind(docs, "Deployment").values():
        (keys,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if "secret" in v]
        assert keys["secret"]["secretName"] == "my-keys"


def test_chart_external_urls_by_default() -> None:
    values = _values()
    assert values["nats"]["enabled"] is False and values["postgresql"]["enabled"] is False
    values["externalNats"]["url"] = "nats://nats.infra:4222"
    values["externalDatabase"]["url"] = "postgresql+asyncpg://u:p@db.infra:5432/shipyard"
    docs = _render_chart(values)
    assert _settings(docs)["NATS_URL"] == "nats://nats.infra:4222"
    assert _secret(docs)["SHIPYARD_DATABASE_URL"] == values["externalDatabase"]["url"]
    assert len(_by_kind(docs, "Deployment")) == 5


def test_chart_bundled_nats_and_postgres_wired() -> None:
    values = copy.deepcopy(_values())
    values["nats"]["enabled"] = values["postgresql"]["enabled"] = True
    docs = _render_chart(values)
    services = _by_kind(docs, "Service")
    nats = urlsplit(_settings(docs)["NATS_URL"])
    assert services[str(nats.hostname)]["spec"]["ports"][0]["port"] == nats.port
    nats_pod = _by_kind(docs, "Deployment")[f"{RELEASE}-nats"]["spec"]["template"]["spec"]
    assert "-js" in nats_pod["containers"][0]["args"]
    db = urlsplit(_secret(docs)["SHIPYARD_DATABASE_URL"])
    assert db.scheme == "postgresql+asyncpg"
    assert services[str(db.hostname)]["spec"]["ports"][0]["port"] == db.port
    pg_env = {
        e["name"]: e["value"]
        for e in _by_kind(docs, "Deployment")[f"{RELEASE}-postgresql"]["spec"]["template"]["spec"][
            "containers"
        ][0]["env"]
    }
    assert (db.username, db.password, db.path) == (
        pg_env["POSTGRES_USER"],
        pg_env["POSTGRES_PASSWORD"],
        f"/{pg_env['POSTGRES_DB']}",
    )


def test_gotemplate_rejects_missing_values_key() -> None:
    """The renderer is the test's instrument; it must fail on what Helm would render empty."""
    with pytest.raises(TemplateError, match="no key 'nope'"):
        render("{{ .Values.nope }}", {"Values": {}})
    with pytest.raises(TemplateError, match="unsupported"):
        render('{{ include "x" . }}', {"Values": {}})
    text = (
        "a:\n  {{- range $k, $v := .Values.m }}\n  {{ upper $k }}: {{ $v | quote }}\n  {{- end }}"
    )
    assert render(text, {"Values": {"m": {"b": 1, "a": 2}}}) == 'a:\n  A: "2"\n  B: "1"'


def test_chart_object_store_settings() -> None:
    """objectStore values become SHIPYARD_S3_*: the location in the ConfigMap, the keys in the
    Secret (never in the ConfigMap); bucket and region default as Kubeflow's."""
    values = copy.deepcopy(_values())
    assert values["objectStore"]["bucket"] == "mlpipeline"
    assert values["objectStore"]["region"] == "us-east-1"
    values["objectStore"].update(
        endpoint="http://minio.minio:9000", accessKeyId="AKIA1", secretAccessKey="s3cret"
    )
    docs = _render_chart(values)
    settings, secret = _settings(docs), _secret(docs)
    assert settings["SHIPYARD_S3_ENDPOINT"] == "http://minio.minio:9000"
    assert settings["SHIPYARD_S3_BUCKET"] == "mlpipeline"
    assert settings["SHIPYARD_S3_REGION"] == "us-east-1"
    assert secret["SHIPYARD_S3_ACCESS_KEY_ID"] == "AKIA1"
    assert secret["SHIPYARD_S3_SECRET_ACCESS_KEY"] == "s3cret"
    assert "s3cret" not in str(settings)


# ---- the Kubernetes runtime: settings, RBAC, NetworkPolicy, Pod Security, 1.37 schemas ----


def _local_values() -> dict[str, Any]:
    values = _values()
    values["runtime"]["kind"] = "local"
    return values


def _bundled_values() -> dict[str, Any]:
    values = _values()
    values["nats"]["enabled"] = values["postgresql"]["enabled"] = True
    return values


VARIANTS = {
    "kubernetes-runtime": _values,
    "local-runtime": _local_values,
    "bundled-nats-postgres": _bundled_values,
}


def _validate(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_validator_is_strict() -> None:
    """The instrument first: an unknown field, a wrong type and an unknown kind all fail, so
    a pass below means something."""
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "busybox"}]}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}
    _validate(pod)
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate({**pod, "spec": {**spec, "restartPolicyy": "Never"}})
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate({**pod, "spec": {"containers": [{"name": "c", "image": "b", "ports": [{}]}]}})
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        _validate({"apiVersion": "v1", "kind": "Podd", "metadata": {"name": "p"}})


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_chart_validates_against_kubernetes_schemas(variant: str) -> None:
    """Every object the chart renders, for the default (Kubernetes runtime) values, the local
    runtime's and the bundled NATS/Postgres, validates against the Kubernetes 1.37 schemas,
    strictly. A kind without a schema fails too (SchemaNotFoundError is not caught)."""
    docs = _render_chart(VARIANTS[variant]())
    assert len(docs) > 10
    failures = []
    for obj in docs:
        try:
            _validate(obj)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {exc.message}")
    assert not failures, "\n".join(failures)


def test_chart_values_schema() -> None:
    """values.schema.json (which helm checks values against) accepts the chart's values and
    refuses a runtime it does not know."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.validate(_values(), schema)
    jsonschema.validate(_local_values(), schema)
    bad = _values()
    bad["runtime"]["kind"] = "k8s"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_chart_runtime_settings() -> None:
    """The chart runs the Kubernetes runtime by default; its settings reach every process."""
    values = _values()
    assert values["runtime"]["kind"] == "kubernetes"
    settings = _settings(_render_chart(values))
    assert settings["SHIPYARD_RUNTIME"] == "kubernetes"
    image = f"{values['image']['repository']}:{values['image']['tag']}"
    assert settings["SHIPYARD_PLATFORM_IMAGE"] == image  # the platform's own image by default
    assert settings["SHIPYARD_KUBE_TOKEN_AUDIENCE"] == "shipyard"
    assert settings["SHIPYARD_KUBE_TOKEN_ISSUER"] == "https://kubernetes.default.svc.cluster.local"
    assert settings["SHIPYARD_KUBE_STORAGE_CLASS"] == ""  # the cluster's default class
    assert settings["SHIPYARD_KUBE_PLATFORM_NAMESPACE"] == NAMESPACE
    # Workloads in profile namespaces reach the gateway by its namespace-qualified name.
    gateway_url = urlsplit(settings["SHIPYARD_GATEWAY_URL"])
    assert gateway_url.hostname == f"{RELEASE}-gateway.{NAMESPACE}.svc"
    assert gateway_url.port == values["gateway"]["port"]

    values["runtime"].update(
        platformImage="registry.local/shipyard:dev",
        tokenAudience="aud-x",
        tokenIssuer="https://oidc.example/id/1",
        storageClass="fast",
    )
    settings = _settings(_render_chart(values))
    assert settings["SHIPYARD_PLATFORM_IMAGE"] == "registry.local/shipyard:dev"
    assert settings["SHIPYARD_KUBE_TOKEN_AUDIENCE"] == "aud-x"
    assert settings["SHIPYARD_KUBE_TOKEN_ISSUER"] == "https://oidc.example/id/1"
    assert settings["SHIPYARD_KUBE_STORAGE_CLASS"] == "fast"

    assert _settings(_render_chart(_local_values()))["SHIPYARD_RUNTIME"] == "local"


#: What the Kubernetes runtime does, resource by resource (services/common/runtime/kubernetes.py).
RUNTIME_RULES = {
    ("", "pods"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "pods/log"): {"get"},
    ("", "services"): {"get", "create", "patch", "delete"},
    ("", "secrets"): {"get", "create", "patch", "delete"},
    ("", "persistentvolumeclaims"): {"get", "list", "create", "delete"},
    ("", "namespaces"): {"create", "patch", "delete"},
    ("", "resourcequotas"): {"get", "create", "patch", "delete"},
    ("", "serviceaccounts"): {"create"},
    ("rbac.authorization.k8s.io", "rolebindings"): {"create"},
    ("networking.k8s.io", "networkpolicies"): {"create", "get", "patch"},
    # the gateway's TokenReview of workloads' projected tokens (gateway/kube_tokens.py)
    ("authentication.k8s.io", "tokenreviews"): {"create"},
}
KUBEFLOW_ROLES = ("kubeflow-admin", "kubeflow-edit", "kubeflow-view")


def _grants(rules: list[dict[str, Any]]) -> dict[tuple[str, str, str | None], set[str]]:
    """(apiGroup, resource, resourceName or None) -> verbs."""
    out: dict[tuple[str, str, str | None], set[str]] = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for name in rule.get("resourceNames") or [None]:
                    out.setdefault((group, resource, name), set()).update(rule["verbs"])
    return out


def _pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: d["spec"]["template"]["spec"] for name, d in _by_kind(docs, "Deployment").items()}


def test_chart_rbac_for_the_kubernetes_runtime() -> None:
    """One ServiceAccount for the platform's processes, bound cluster-wide to exactly the
    verbs the runtime uses; the kubeflow-* roles profile namespaces bind to."""
    docs = _render_chart(_values())
    (account,) = _by_kind(docs, "ServiceAccount")
    for name in [f"{RELEASE}-{n}" for n in DEFAULT_MODULES]:
        pod = _pod_specs(docs)[name]
        assert pod["serviceAccountName"] == account, name
        assert pod["automountServiceAccountToken"] is True, name  # the API client reads it

    runtime_role = f"{NAMESPACE}-{RELEASE}-runtime"
    binding = _by_kind(docs, "ClusterRoleBinding")[runtime_role]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": runtime_role,
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
    ]
    roles = _by_kind(docs, "ClusterRole")
    grants = _grants(roles[runtime_role]["rules"])
    expected: dict[tuple[str, str, str | None], set[str]] = {
        (g, r, None): verbs for (g, r), verbs in RUNTIME_RULES.items()
    }
    # Binding the kubeflow roles in a profile namespace needs `bind` on exactly those.
    for role in KUBEFLOW_ROLES:
        expected[("rbac.authorization.k8s.io", "clusterroles", role)] = {"bind"}
    assert grants == expected

    # kubeflow-admin > kubeflow-edit > kubeflow-view, aggregated by label as Kubeflow's.
    label = "rbac.authorization.kubeflow.org/aggregate-to-{}"

    def aggregated(role: str) -> set[str]:
        selectors = roles[role]["aggregationRule"]["clusterRoleSelectors"]
        picked = {
            name
            for name, other in roles.items()
            for sel in selectors
            if sel["matchLabels"].items() <= other["metadata"]["labels"].items()
        }
        return picked | {r for p in picked if "aggregationRule" in roles[p] for r in aggregated(p)}

    def rules_of(role: str) -> dict[tuple[str, str, str | None], set[str]]:
        return _grants([r for name in aggregated(role) for r in roles[name].get("rules", [])])

    for role in KUBEFLOW_ROLES:
        assert roles[role]["rules"] == []  # filled in by the aggregation controller
        assert {label.format(role): "true"} == roles[role]["aggregationRule"][
            "clusterRoleSelectors"
        ][0]["matchLabels"]
    view, edit, admin = (rules_of(r) for r in ("kubeflow-view", "kubeflow-edit", "kubeflow-admin"))
    for lower, higher in ((view, edit), (edit, admin)):
        assert all(lower[k] <= higher.get(k, set()) for k in lower)
    assert ("", "secrets", None) not in view  # as Kubernetes' own view role
    assert {"create", "delete"} <= edit[("", "pods", None)]
    assert "create" in admin[("rbac.authorization.k8s.io", "rolebindings", None)]
    assert ("rbac.authorization.k8s.io", "rolebindings", None) not in edit

    values = _values()
    values["rbac"]["createKubeflowRoles"] = False  # Kubeflow's own are installed
    assert set(_by_kind(_render_chart(values), "ClusterRole")) == {runtime_role}


def test_chart_local_runtime_needs_no_cluster_role() -> None:
    docs = _render_chart(_local_values())
    assert not _by_kind(docs, "ClusterRole") and not _by_kind(docs, "ClusterRoleBinding")
    assert len(_by_kind(docs, "ServiceAccount")) == 1
    for name, pod in _pod_specs(docs).items():
        assert pod["automountServiceAccountToken"] is False, name


def test_chart_pods_are_restricted() -> None:
    """Pod Security "restricted" for the platform's own pods, as for its workloads: non-root
    by number (the image's user is a name, which the kubelet cannot check), no privilege
    escalation, every capability dropped, the runtime's default seccomp profile, and only
    the volume types the profile allows."""
    allowed_volumes = {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
    docs = _render_chart(_bundled_values())
    pods = _pod_specs(docs)
    assert {f"{RELEASE}-nats", f"{RELEASE}-postgresql", f"{RELEASE}-gateway"} <= set(pods)
    for name, pod in pods.items():
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True, name
        assert isinstance(context["runAsUser"], int) and context["runAsUser"] > 0, name
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod), name
        for volume in pod.get("volumes", []):
            assert set(volume) - {"name"} <= allowed_volumes, (name, volume)
        for container in pod["containers"] + pod.get("initContainers", []):
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            assert not sc.get("privileged"), name
            assert sc.get("runAsUser", 1) != 0, name


# -- NetworkPolicy, evaluated as the API defines it (a stand-in for a CNI; docs/kubernetes.md) --


def _peer_matches(
    peer: dict[str, Any], policy_ns: str, src_ns: str, src_labels: dict[str, str]
) -> bool:
    assert set(peer) <= {"podSelector", "namespaceSelector"}, peer  # ipBlock: not used here
    for selector in peer.values():
        assert set(selector) <= {"matchLabels"}, selector  # the evaluator's subset
    if "namespaceSelector" in peer:
        ns_labels = {"kubernetes.io/metadata.name": src_ns}
        if not peer["namespaceSelector"].get("matchLabels", {}).items() <= ns_labels.items():
            return False
    elif src_ns != policy_ns:
        return False
    pod_selector = peer.get("podSelector", {}).get("matchLabels", {})
    return bool(pod_selector.items() <= src_labels.items())


def _admits(
    policies: list[dict[str, Any]],
    dst_ns: str,
    dst_pod: dict[str, Any],
    src_ns: str,
    src_labels: dict[str, str],
) -> bool:
    """May a pod (src) open a connection to every port of ``dst_pod``'s first container?"""
    labels = dst_pod["metadata"]["labels"]
    ports = {p["name"]: p["containerPort"] for p in dst_pod["spec"]["containers"][0]["ports"]}
    selecting = [
        p
        for p in policies
        if p["metadata"].get("namespace", dst_ns) == dst_ns
        and "Ingress" in p["spec"]["policyTypes"]
        and p["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()
    ]
    if not selecting:
        return True
    for port_name in ports:
        admitted = False
        for policy in selecting:
            for rule in policy["spec"].get("ingress", []):
                peers = rule.get("from")
                if peers and not any(
                    _peer_matches(peer, dst_ns, src_ns, src_labels) for peer in peers
                ):
                    continue
                rule_ports = rule.get("ports")
                if rule_ports and not any(
                    rp["port"] in (port_name, ports[port_name]) for rp in rule_ports
                ):
                    continue
                admitted = True
        if not admitted:
            return False
    return True


def test_chart_network_policy_admits_only_the_gateway_from_outside() -> None:
    docs = _render_chart(_bundled_values())
    policies = list(_by_kind(docs, "NetworkPolicy").values())
    assert policies
    pods = {n: d["spec"]["template"] for n, d in _by_kind(docs, "Deployment").items()}
    outside = [
        ("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}),
        ("kubeflow-user-example-com", {"app.kubernetes.io/managed-by": "shipyard"}),  # workload
        (NAMESPACE, {"app": "something-else"}),  # another app beside the platform
    ]
    gateway = f"{RELEASE}-gateway"
    for name, pod in pods.items():
        for src_ns, src_labels in outside:
            assert _admits(policies, NAMESPACE, pod, src_ns, src_labels) == (name == gateway), (
                name,
                src_ns,
            )
        for other in pods.values():  # the platform's pods reach each other (Postgres, NATS)
            assert _admits(policies, NAMESPACE, pod, NAMESPACE, other["metadata"]["labels"])

    # The runtime's policy in each profile namespace admits pods with this label from the
    # release namespace (SHIPYARD_KUBE_PLATFORM_NAMESPACE): the gateway must keep it.
    assert pods[gateway]["metadata"]["labels"]["app.kubernetes.io/component"] == "gateway"
    assert _settings(docs)["SHIPYARD_KUBE_PLATFORM_NAMESPACE"] == NAMESPACE

    values = _values()
    values["networkPolicy"]["enabled"] = False
    assert not _by_kind(_render_chart(values), "NetworkPolicy")


def test_gotemplate_eq() -> None:
    text = '{{ if eq .Values.k "a" }}yes{{ else }}no{{ end }}'
    assert render(text, {"Values": {"k": "a"}}) == "yes"
    assert render(text, {"Values": {"k": "b"}}) == "no"


def test_rbac_attributes_of_requests() -> None:
    """The instrument for checking the runtime's requests against the chart's role."""
    a = rbac.attributes
    assert a("GET", "/api/v1/pods?labelSelector=x&watch=true") == rbac.Attributes(
        "watch", "", "pods", None, None
    )
    assert a("GET", "/api/v1/pods", [("watch", "1")]).verb == "watch"
    assert a("GET", "/api/v1/persistentvolumeclaims").verb == "list"
    assert a("GET", "/api/v1/namespaces/ns/pods/p/log") == rbac.Attributes(
        "get", "", "pods/log", "ns", "p"
    )
    assert a("POST", "/api/v1/namespaces") == rbac.Attributes(
        "create", "", "namespaces", None, None
    )
    assert a("PATCH", "/api/v1/namespaces/team") == rbac.Attributes(
        "patch", "", "namespaces", None, "team"
    )
    assert a("DELETE", "/apis/networking.k8s.io/v1/namespaces/ns/networkpolicies") == (
        rbac.Attributes("deletecollection", "networking.k8s.io", "networkpolicies", "ns", None)
    )
    rules = _by_kind(_render_chart(_values()), "ClusterRole")[f"{NAMESPACE}-{RELEASE}-runtime"][
        "rules"
    ]
    assert rbac.allowed(rules, a("GET", "/api/v1/namespaces/ns/pods/p/log"))
    assert rbac.allowed(
        rules, a("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/n/rolebindings")
    )
    assert not rbac.allowed(rules, a("GET", "/api/v1/namespaces/ns/secrets"))  # no list
    assert not rbac.allowed(rules, a("GET", "/api/v1/namespaces/ns/configmaps/kube-root-ca.crt"))
    assert not rbac.allowed(rules, a("POST", "/api/v1/namespaces/ns/pods/p/exec"))


def test_chart_settings_are_read_by_the_processes() -> None:
    """Every variable the chart sets is a field some process reads (a name the chart and the
    code spell differently would be ignored in silence): the gateway's and each service's
    settings, the runtime's choice and the Kubernetes runtime's own."""
    import importlib

    from pydantic_settings import BaseSettings

    from gateway.settings import Settings as GatewaySettings
    from services.common.runtime.config import RuntimeSettings
    from services.common.runtime.kubernetes import KubernetesSettings

    classes: list[type[BaseSettings]] = [GatewaySettings, RuntimeSettings, KubernetesSettings]
    classes += [importlib.import_module(f"services.{s}.settings").Settings for s in SERVICES]
    read: set[str] = set()
    for cls in classes:
        prefix = str(cls.model_config.get("env_prefix") or "").upper()
        for name, field in cls.model_fields.items():
            read.add(prefix + name.upper())
            choices = getattr(field.validation_alias, "choices", None) or []
            read.update(str(c).upper() for c in choices)
    for values in (_values(), _local_values(), _bundled_values()):
        docs = _render_chart(values)
        env = set(_settings(docs)) | set(_secret(docs))
        for deployment in _by_kind(docs, "Deployment").values():
            for container in deployment["spec"]["template"]["spec"]["containers"]:
                if deployment["metadata"]["labels"]["app.kubernetes.io/component"] in (
                    "nats",
                    "postgresql",
                ):
                    continue
                env |= {e["name"] for e in container.get("env", [])}
        assert env - read == set()


def test_chart_and_the_runtimes_profile_objects_fit() -> None:
    """What the runtime makes in a profile's namespace works with what the chart installs:
    its NetworkPolicy admits the chart's gateway pods (from the release namespace) and
    nothing else of the platform's or the world's, its RoleBindings name the ClusterRoles
    the chart creates and lets the platform bind, and every object validates against 1.37."""
    from services.common.runtime.k8s_profile import namespace_manifest, profile_objects

    docs = _render_chart(_bundled_values())
    platform_ns = _settings(docs)["SHIPYARD_KUBE_PLATFORM_NAMESPACE"]
    objects = [obj for _, obj in profile_objects("team-x", "x@example.com", platform_ns)]
    for obj in [namespace_manifest("team-x", "x@example.com"), *objects]:
        _validate(obj)

    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    managed = {"app.kubernetes.io/managed-by": "shipyard"}
    workload: dict[str, Any] = {
        "metadata": {"labels": managed},
        "spec": {"containers": [{"ports": [{"name": "http", "containerPort": 8888}]}]},
    }
    pods = {n: d["spec"]["template"] for n, d in _by_kind(docs, "Deployment").items()}
    for name, pod in pods.items():
        labels = pod["metadata"]["labels"]
        admitted = _admits(policies, "team-x", workload, platform_ns, labels)
        assert admitted == (name == f"{RELEASE}-gateway"), name
        # the same labels in another namespace are nobody's gateway
        assert not _admits(policies, "team-x", workload, "elsewhere", labels)
    assert not _admits(policies, "team-x", workload, "team-x", managed)  # one workload, another

    roles = _by_kind(docs, "ClusterRole")
    bindable = _grants(roles[f"{NAMESPACE}-{RELEASE}-runtime"]["rules"])
    for binding in (o for o in objects if o["kind"] == "RoleBinding"):
        role = binding["roleRef"]["name"]
        assert role in roles and role in KUBEFLOW_ROLES, role
        assert bindable[("rbac.authorization.k8s.io", "clusterroles", role)] == {"bind"}


def test_chart_two_replicas_of_each_service() -> None:
    """``replicas: 2`` renders two pods of each service (every replica serves the API; one,
    the leader, reconciles: services/common/leader.py) and still validates."""
    values = _values()
    for svc in values["services"].values():
        svc["replicas"] = 2
    docs = _render_chart(values)
    deployments = _by_kind(docs, "Deployment")
    for name in values["services"]:
        assert deployments[f"{RELEASE}-{name}"]["spec"]["replicas"] == 2
        _validate(deployments[f"{RELEASE}-{name}"])
