"""charts/shipyard renders to consistent Kubernetes objects.

There is no helm binary here. The chart is written in a small Go-template subset and
rendered by tests/deploy/gotemplate.py (a stand-in for `helm template`; anything outside
the subset fails loudly). On top of rendering, every `.Values` reference in every template,
including branches not taken, is checked against values.yaml.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from shipyard.up import DEFAULT_MODULES, DEFAULT_PORTS, SERVICES
from tests.deploy.gotemplate import TemplateError, render

CHART = Path(__file__).resolve().parents[2] / "charts" / "shipyard"
RELEASE = "sy"


def _values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def _render_chart(values: dict[str, Any]) -> list[dict[str, Any]]:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    context = {
        "Values": values,
        "Release": {"Name": RELEASE, "Namespace": "default"},
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
        assert container["ports"] == [{"name": "http", "containerPort": port}]
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
