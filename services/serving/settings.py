"""Settings of the serving service."""

from services.common.fetch import AllowedHosts
from services.common.settings import ServiceSettings
from services.serving.modelcache import DownloadPolicy


class Settings(ServiceSettings):
    service_name: str = "serving"
    port: int = 8184
    #: How long an InferenceService with ``minReplicas: 0`` may see no request through the
    #: gateway before its predictor is stopped (Knative's ``scale-to-zero-grace-period``).
    #: Keep it well above the gateway's ``SHIPYARD_ACTIVITY_REPORT_SECONDS``.
    scale_to_zero_seconds: float = 60.0
    #: Knative's ``stable-window``: replicas follow the highest concurrency (or request rate,
    #: with ``scaleMetric: rps``) the gateway saw within this many seconds (up at once, down
    #: when the window has passed).
    autoscale_window_seconds: float = 60.0
    #: Knative's ``max-scale-limit``: the most replicas (``minReplicas`` and ``maxReplicas``)
    #: one predictor, transformer, explainer or InferenceGraph may ask for; above it the write
    #: is a 422. A tenant's replica counts are sizes it supplies, and each replica is a server
    #: process on this host. 0: no limit (a cluster with its own quotas).
    max_scale_limit: int = 10
    #: ``host`` or ``host:port`` entries (comma-separated) that http(s) storage URIs may
    #: fetch from although they resolve to loopback, private or link-local addresses (an
    #: internal model mirror). Every other host must resolve only to public addresses.
    model_download_allowed_hosts: str = ""
    #: The largest model (downloaded bytes, and again unpacked bytes) a storageUri may bring.
    model_download_max_bytes: int = 10 * 1024**3
    #: How long one model download (check, transfer, unpacking) may take in all.
    model_download_timeout_seconds: float = 3600.0

    def download_policy(self) -> DownloadPolicy:
        return DownloadPolicy(
            max_bytes=self.model_download_max_bytes,
            timeout_seconds=self.model_download_timeout_seconds,
            allowed_hosts=AllowedHosts.parse(self.model_download_allowed_hosts),
        )
