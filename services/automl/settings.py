"""Settings of the automl service."""

from services.common.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "automl"
    port: int = 8182
    # Where trial workloads reach this service for Push metrics (default http://host:port).
    metrics_push_url: str = ""
    resync_seconds: float = 30.0
    # The durable JetStream consumer of trial events (one per deployment).
    events_durable: str = "automl-experiment-controller"
    # Upper bound on one trial's run when its Job sets no activeDeadlineSeconds.
    max_trial_seconds: float = 7 * 24 * 3600
    # Runtime selection (SHIPYARD_RUNTIME); None defers to the runtime's own settings.
    runtime: str | None = None

    def push_base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        return (self.metrics_push_url or f"http://{host}:{self.port}").rstrip("/")
