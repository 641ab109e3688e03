"""Settings of the pipeline service."""

from pathlib import Path

from services.common.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "pipeline"
    port: int = 8183
    # SHIPYARD_CACHE_ENABLED=false turns step caching off for every run.
    cache_enabled: bool = True
    # Where the local artifact store keeps step artifacts (default: <state_dir>/pipeline/artifacts).
    artifact_dir: Path | None = None
    # How long a KFP artifact's download_url (GET /apis/v2beta1/artifacts/{id}?view=DOWNLOAD)
    # stays valid, in seconds (KFP's default: 15).
    artifact_url_expiry_seconds: int = 15
    # Finished runs older than this many seconds are deleted (0: keep forever).
    retention_seconds: float = 0
    workflow_workers: int = 4
    # The KFP API's multi-user flag (healthz); single-user mode answers false.
    kfp_multi_user: bool = False

    def artifact_root(self) -> Path:
        return self.artifact_dir or self.state_dir / "pipeline" / "artifacts"
