"""Settings of the pipeline service."""

from services.common.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "pipeline"
    port: int = 8183
    # SHIPYARD_CACHE_ENABLED=false turns step caching off for every run.
    cache_enabled: bool = True
    # The largest artifact a step may upload (S3's single-upload limit by default).
    artifact_max_bytes: int = 5 * 1024**3
    # Hosts an http input artifact, importer URL or KFP package_url may name although they
    # resolve to non-public addresses (host or host:port, comma-separated; services.common.fetch).
    artifact_download_allowed_hosts: str = ""
    # How long a KFP artifact's download_url (GET /apis/v2beta1/artifacts/{id}?view=DOWNLOAD)
    # stays valid, in seconds (KFP's default: 15).
    artifact_url_expiry_seconds: int = 15
    # Finished runs older than this many seconds are deleted (0: keep forever).
    retention_seconds: float = 0
    workflow_workers: int = 4
    # The KFP API's multi-user flag (healthz); single-user mode answers false.
    kfp_multi_user: bool = False
