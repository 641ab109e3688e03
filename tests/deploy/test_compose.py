"""docker-compose.yml, deploy/dex/config.yaml and the Dockerfile agree with the code.

There is no Docker engine here, so nothing is run: these tests read the files and check
what a wrong edit would break (commands that name no module, URLs pointing at the wrong
service or port, a Dex client the gateway cannot use).
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from shipyard.up import DEFAULT_MODULES, DEFAULT_PORTS, SERVICES

with warnings.catch_warnings():
    # deprecated (removed in 3.13), but libxcrypt verifies bcrypt with no extra dependency
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

REPO = Path(__file__).resolve().parents[2]
OURS = ("gateway", *SERVICES)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def dex() -> dict[str, Any]:
    return yaml.safe_load((REPO / "deploy" / "dex" / "config.yaml").read_text())


def _env(compose: dict[str, Any], name: str) -> dict[str, str]:
    return {k: str(v) for k, v in compose["services"][name]["environment"].items()}


def _module_of(command: list[str]) -> str:
    assert command[:2] == ["python", "-m"], command
    return command[2]


def test_compose_has_every_process(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"postgres", "nats", "s3", "dex", "keys", *OURS}


def test_compose_commands_match_process_contract(compose: dict[str, Any]) -> None:
    for name in OURS:
        service = compose["services"][name]
        assert _module_of(service["command"]) == DEFAULT_MODULES[name]
        assert service["build"]["context"] == "." and service["image"] == "shipyard:dev"
    assert _module_of(compose["services"]["keys"]["command"]) == "shipyard.up"
    assert (REPO / compose["services"]["gateway"]["build"]["dockerfile"]).is_file()


def test_compose_commands_importable(compose: dict[str, Any]) -> None:
    """Every `python -m X` names a module (with __main__ for packages) in this tree."""
    missing = []
    for name, service in compose["services"].items():
        if "build" not in service:
            continue
        module = _module_of(service["command"])
        spec = importlib.util.find_spec(module)
        if spec is None or (
            spec.submodule_search_locations is not None
            and importlib.util.find_spec(f"{module}.__main__") is None
        ):
            missing.append(f"{name}: {module}")
    assert missing == []


def test_compose_ports_and_urls_agree(compose: dict[str, Any]) -> None:
    gateway = _env(compose, "gateway")
    for name in SERVICES:
        env = _env(compose, name)
        assert env["SHIPYARD_PORT"] == str(DEFAULT_PORTS[name])
        assert gateway[f"SHIPYARD_{name.upper()}_URL"] == f"http://{name}:{env['SHIPYARD_PORT']}"
    assert gateway["SHIPYARD_PORT"] == gateway["SHIPYARD_GATEWAY_PORT"] == "8080"
    assert compose["services"]["gateway"]["ports"] == [
        f"8080:{gateway['SHIPYARD_PORT']}",
        f"8081:{gateway['SHIPYARD_GATEWAY_GRPC_PORT']}",
    ]
    assert gateway["SHIPYARD_PUBLIC_URL"] == "http://localhost:8080"
    for name in OURS:
        # inside a container 127.0.0.1 is unreachable from the other services
        assert _env(compose, name)["SHIPYARD_HOST"] == "0.0.0.0"


def test_compose_nats_and_database_point_at_compose_services(compose: dict[str, Any]) -> None:
    pg_env = compose["services"]["postgres"]["environment"]
    assert "-js" in compose["services"]["nats"]["command"]
    for name in OURS:
        env = _env(compose, name)
        nats = urlsplit(env["NATS_URL"])
        assert (nats.scheme, nats.hostname, nats.port) == ("nats", "nats", 4222)
        db = urlsplit(env["SHIPYARD_DATABASE_URL"])
        assert db.scheme == "postgresql+asyncpg" and (db.hostname, db.port) == ("postgres", 5432)
        assert (db.username, db.password, db.path) == (
            pg_env["POSTGRES_USER"],
            pg_env["POSTGRES_PASSWORD"],
            f"/{pg_env['POSTGRES_DB']}",
        )
        assert env["SHIPYARD_GATEWAY_PUBLIC_KEY_FILE"].startswith(env["SHIPYARD_STATE_DIR"])
        assert "shipyard-state:/var/lib/shipyard" in compose["services"][name]["volumes"]
    keys_cmd = compose["services"]["keys"]["command"]
    assert keys_cmd[keys_cmd.index("--state-dir") + 1] == "/var/lib/shipyard"


def test_compose_dex_matches_gateway_oidc(compose: dict[str, Any], dex: dict[str, Any]) -> None:
    gateway = _env(compose, "gateway")
    assert gateway["SHIPYARD_AUTH_MODE"] == "oidc"
    assert gateway["SHIPYARD_OIDC_ISSUER"] == dex["issuer"] == "http://dex:5556/dex"
    issuer = urlsplit(dex["issuer"])
    assert dex["web"]["http"].endswith(f":{issuer.port}")
    assert compose["services"]["dex"]["ports"] == [f"{issuer.port}:{issuer.port}"]
    (client,) = [c for c in dex["staticClients"] if c["id"] == gateway["SHIPYARD_OIDC_CLIENT_ID"]]
    assert client["secret"] == gateway["SHIPYARD_OIDC_CLIENT_SECRET"]
    assert f"{gateway['SHIPYARD_PUBLIC_URL']}/oauth2/callback" in client["redirectURIs"]
    mount = compose["services"]["dex"]["volumes"][0].split(":")
    assert (REPO / mount[0]).resolve() == REPO / "deploy" / "dex" / "config.yaml"
    assert compose["services"]["dex"]["command"][-1] == mount[1]


def test_compose_dex_static_user_password(dex: dict[str, Any]) -> None:
    (user,) = dex["staticPasswords"]
    assert user["email"] == "user@example.com"
    assert crypt.crypt("password", user["hash"]) == user["hash"]
    assert crypt.crypt("wrong", user["hash"]) != user["hash"]


def test_dockerfile_runs_every_process_from_one_image() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert "constraints.txt" in text and "bubblewrap" in text
    for port in DEFAULT_PORTS.values():
        assert str(port) in text
    assert 'CMD ["python", "-m", "gateway"]' in text


def test_compose_object_store_settings_match_seaweedfs(compose: dict[str, Any]) -> None:
    """Every process gets SHIPYARD_S3_* pointing at compose's SeaweedFS, with the access key
    its identity file holds."""
    import json

    s3 = compose["services"]["s3"]
    assert s3["image"].startswith("chrislusf/seaweedfs:")
    command = s3["command"]
    assert command[0] == "server" and "-s3" in command and "-s3.port=8333" in command
    config_mount = next(v for v in s3["volumes"] if v.endswith(":/etc/seaweedfs/s3.json:ro"))
    identities = json.loads((REPO / config_mount.split(":")[0]).read_text())["identities"]
    (credential,) = identities[0]["credentials"]
    for name in OURS:
        env = _env(compose, name)
        assert env["SHIPYARD_S3_ENDPOINT"] == "http://s3:8333"
        assert env["SHIPYARD_S3_ACCESS_KEY_ID"] == credential["accessKey"]
        assert env["SHIPYARD_S3_SECRET_ACCESS_KEY"] == credential["secretKey"]
        assert env["SHIPYARD_S3_BUCKET"] == "mlpipeline"
        assert env["SHIPYARD_S3_REGION"] == "us-east-1"
        assert "s3" in compose["services"][name]["depends_on"]
