"""Settings of the serving service."""

from services.common.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "serving"
    port: int = 8184
    #: How long an InferenceService with ``minReplicas: 0`` may see no request through the
    #: gateway before its predictor is stopped (Knative's ``scale-to-zero-grace-period``).
    #: Keep it well above the gateway's ``SHIPYARD_ACTIVITY_REPORT_SECONDS``.
    scale_to_zero_seconds: float = 60.0
    #: Knative's ``stable-window``: replicas follow the highest concurrency the gateway saw
    #: within this many seconds (up at once, down when the window has passed).
    autoscale_window_seconds: float = 60.0
