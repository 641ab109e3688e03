"""Service settings: the only place that reads the environment.

Every service subclasses :class:`ServiceSettings` in its own ``settings.py``; the
environment variable names are a public contract (see DESIGN.md), so they are
spelled out here once.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.dataplane import load_or_create_key
from services.common.objectstore import DEFAULT_BUCKET, DEFAULT_REGION, S3Config

DEFAULT_STATE_DIR = Path(".shipyard")
SINGLE_USER = "user@example.com"
SINGLE_USER_NAMESPACE = "kubeflow-user-example-com"


class ServiceSettings(BaseSettings):
    """Settings shared by every service process."""

    model_config = SettingsConfigDict(env_prefix="SHIPYARD_", extra="ignore")

    service_name: str = "service"
    host: str = "127.0.0.1"
    port: int = 0
    state_dir: Path = DEFAULT_STATE_DIR
    database_url: str = ""
    nats_url: str = Field(
        default="nats://127.0.0.1:4222",
        validation_alias=AliasChoices("NATS_URL", "SHIPYARD_NATS_URL"),
    )
    gateway_public_key: str = ""
    gateway_public_key_file: Path | None = None
    # Where workloads reach the API, and the key that signs their service-account tokens.
    gateway_url: str = "http://127.0.0.1:8080"
    serviceaccount_key_file: Path | None = None
    # The data-plane key (services.common.dataplane) that every Jupyter server's token derives
    # from; the gateway reads the same file. Default ``<state_dir>/keys/dataplane.key``.
    dataplane_key_file: Path | None = None
    log_level: str = "INFO"
    max_body_bytes: int = 32 * 1024 * 1024
    auth_mode: str = "single-user"
    run_migrations: bool = True
    # The object store (services.common.objectstore): any S3-compatible endpoint. Unset,
    # `shipyard up` runs an embedded SeaweedFS and passes its endpoint and keys here.
    s3_endpoint: str = ""
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    s3_region: str = DEFAULT_REGION
    s3_bucket: str = DEFAULT_BUCKET

    def object_store_config(self) -> S3Config | None:
        """The object store's settings, or None when ``SHIPYARD_S3_ENDPOINT`` is unset."""
        if not self.s3_endpoint:
            return None
        return S3Config(
            endpoint=self.s3_endpoint,
            access_key_id=self.s3_access_key_id,
            secret_access_key=self.s3_secret_access_key,
            region=self.s3_region or DEFAULT_REGION,
            bucket=self.s3_bucket or DEFAULT_BUCKET,
        )

    def resolved_database_url(self) -> str:
        """The database URL for this service: Postgres if configured, else its own SQLite file."""
        if self.database_url:
            return self.database_url.replace("{service}", self.service_name)
        path = (self.state_dir / f"{self.service_name}.db").resolve()
        return f"sqlite+aiosqlite:///{path}"

    def serviceaccount_key_path(self) -> Path:
        return Path(self.serviceaccount_key_file or self.state_dir / "keys" / "serviceaccounts.key")

    def serviceaccount_key_pem(self) -> bytes:
        """The service-account signing key (created with the platform's keys when missing)."""
        path = self.serviceaccount_key_path()
        if not path.exists() and self.serviceaccount_key_file is None:
            from services.common.identity import ensure_keypair

            ensure_keypair(path.with_suffix(""))
        return path.read_bytes()

    def dataplane_key_path(self) -> Path:
        return Path(self.dataplane_key_file or self.state_dir / "keys" / "dataplane.key")

    def dataplane_key(self) -> bytes:
        """The data-plane key (created, mode 0600, when missing)."""
        return load_or_create_key(self.dataplane_key_path())

    def public_key_pem(self) -> bytes:
        """The gateway's public key that signs identity assertions."""
        if self.gateway_public_key:
            return self.gateway_public_key.encode()
        path = self.gateway_public_key_file or self.state_dir / "keys" / "gateway.pub"
        return Path(path).read_bytes()
