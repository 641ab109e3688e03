"""Gateway settings: the only place in the gateway that reads the environment."""

from __future__ import annotations

from pathlib import Path

from pydantic import model_validator

from gateway.notebook_origin import resolve_domain
from gateway.registration import DEFAULT as DEFAULT_REGISTRATION_QUOTA
from gateway.registration import parse_hard
from services.common.certs import CertificatePaths, ensure_api_certificate
from services.common.identity import ensure_gateway_keys
from services.common.runtime.config import DEFAULT_GATEWAY_TLS_PORT
from services.common.runtime.sandbox import API_ADDRESS
from services.common.settings import ServiceSettings

DEFAULT_COOKIE_SECRET = "change-me-shipyard-cookie-secret"
AUTH_MODES = ("single-user", "oidc", "trusted-header")
TRUSTED_HEADER_LOCAL_RUNTIME = (
    "SHIPYARD_AUTH_MODE=trusted-header is refused with the local runtime (SHIPYARD_RUNTIME "
    "unset or 'local'): its workloads run on this host, and whatever can reach the gateway "
    "from an address in SHIPYARD_TRUSTED_PROXIES can claim any user with a kubeflow-userid "
    "header. Use SHIPYARD_AUTH_MODE=oidc, or put the gateway behind an authenticating proxy "
    "that workloads cannot reach, list only that proxy's address in SHIPYARD_TRUSTED_PROXIES "
    "and set SHIPYARD_TRUSTED_HEADER_ALLOW_LOCAL_RUNTIME=true."
)


def split_csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


class Settings(ServiceSettings):
    """Everything the gateway is configured with (names are a public contract, see DESIGN.md)."""

    service_name: str = "gateway"
    gateway_port: int = 8080
    #: The TLS listener workloads reach as their in-cluster Kubernetes API (services/common/
    #: runtime/incluster.py), with a certificate of the platform's own CA; 0: none.
    gateway_tls_port: int = DEFAULT_GATEWAY_TLS_PORT
    gateway_private_key_file: Path | None = None
    notebook_url: str = "http://127.0.0.1:8181"
    automl_url: str = "http://127.0.0.1:8182"
    pipeline_url: str = "http://127.0.0.1:8183"
    serving_url: str = "http://127.0.0.1:8184"

    oidc_issuer: str = ""
    oidc_client_id: str = "shipyard"
    oidc_client_secret: str = ""
    oidc_audiences: str = ""
    oidc_user_claim: str = "email"
    oidc_groups_claim: str = "groups"
    oidc_cli_client_id: str = "shipyard-cli"
    oidc_scopes: str = "openid email profile groups offline_access"
    oidc_leeway_seconds: int = 30
    oidc_jwks_min_refetch_seconds: float = 10.0
    cluster_admins: str = ""
    registration_flow: bool = True
    #: The quota of a profile a person registers for themselves (gateway/registration.py):
    #: ``name=quantity,...`` as ``kubectl create quota --hard`` takes it; empty: none.
    registration_quota: str = DEFAULT_REGISTRATION_QUOTA

    #: Comma-separated client addresses whose ``kubeflow-userid`` header is believed
    #: (trusted-header mode). Empty: none. Loopback is not trusted by default, because on
    #: one host every workload's traffic can arrive from it.
    trusted_proxies: str = ""
    #: trusted-header mode beside the local runtime: refused unless this says yes.
    trusted_header_allow_local_runtime: bool = False
    #: The workload runtime (``SHIPYARD_RUNTIME``); the gateway only reads it to refuse
    #: trusted-header mode where workloads share the host's network.
    runtime: str = "local"
    cookie_secret: str = DEFAULT_COOKIE_SECRET
    cookie_name: str = "shipyard_session"
    session_max_age_seconds: int = 24 * 3600
    session_refresh_seconds: float = 3600.0
    auto_create_profile: bool = False
    public_url: str = ""
    #: Notebooks are served on origins of their own, ``{name}.{namespace}.{notebook_domain}``
    #: (a wildcard DNS record to the gateway), so tenant HTML never runs with the dashboard's
    #: origin. Empty: ``notebooks.localhost`` when ``public_url`` is unset or on loopback;
    #: otherwise none, and notebooks stay on the main origin (the gateway warns at start).
    notebook_domain: str = ""

    rate_limit_per_second: float = 50.0
    rate_limit_burst: int = 200
    upstream_connect_timeout: float = 5.0
    upstream_read_timeout: float = 300.0
    readiness_timeout: float = 2.0
    sa_token_ttl_seconds: int = 3600
    #: With SHIPYARD_RUNTIME=kubernetes a workload calls with its pod's projected token: its
    #: issuer (the cluster's service-account issuer) routes it to a TokenReview for this
    #: audience (gateway/kube_tokens.py). The API server is found in-cluster unless
    #: ``kube_api_url`` (with ``kube_api_token_file``, ``kube_api_ca_file``) names it.
    kube_token_issuer: str = "https://kubernetes.default.svc.cluster.local"
    kube_token_audience: str = "shipyard"
    kube_api_url: str = ""
    kube_api_token_file: str = ""
    kube_api_ca_file: str = ""
    route_events: bool = True
    #: How long a request to a scaled-to-zero InferenceService is held while it starts.
    activation_timeout_seconds: float = 120.0
    #: How often the serving service hears which InferenceServices had traffic.
    activity_report_seconds: float = 2.0
    #: The Open Inference Protocol's gRPC (``inference.GRPCInferenceService``, h2c) for
    #: InferenceServices (gateway/grpc_inference.py); 0: no gRPC listener.
    gateway_grpc_port: int = 8081
    #: gRPC calls are routed by the authority ``{name}.{namespace}.{ingress_domain}``.
    ingress_domain: str = "example.com"

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.auth_mode not in AUTH_MODES:
            raise ValueError(f"SHIPYARD_AUTH_MODE must be one of {AUTH_MODES}")
        if self.auth_mode != "single-user":
            if self.cookie_secret == DEFAULT_COOKIE_SECRET or len(self.cookie_secret) < 16:
                raise ValueError(
                    "SHIPYARD_COOKIE_SECRET must be set (>= 16 chars) outside single-user mode"
                )
        parse_hard(self.registration_quota)  # a ValueError naming the setting
        if self.auth_mode == "oidc" and not self.oidc_issuer:
            raise ValueError("SHIPYARD_OIDC_ISSUER is required in oidc mode")
        if (
            self.auth_mode == "trusted-header"
            and self.runtime.strip().lower() in ("", "local")
            and not self.trusted_header_allow_local_runtime
        ):
            raise ValueError(TRUSTED_HEADER_LOCAL_RUNTIME)
        return self

    @property
    def registration_hard(self) -> dict[str, str]:
        """The registration quota's ``hard`` map ({}: none)."""
        return parse_hard(self.registration_quota)

    @property
    def notebook_origin_domain(self) -> str | None:
        """The domain notebook origins live under, or None (path-based on the main origin)."""
        return resolve_domain(self.notebook_domain, self.public_url)

    @property
    def audiences(self) -> list[str]:
        return split_csv(self.oidc_audiences) or [self.oidc_client_id]

    @property
    def admins(self) -> set[str]:
        return set(split_csv(self.cluster_admins))

    @property
    def trusted_proxy_addresses(self) -> set[str]:
        return set(split_csv(self.trusted_proxies))

    @property
    def service_urls(self) -> dict[str, str]:
        return {
            "notebook": self.notebook_url.rstrip("/"),
            "automl": self.automl_url.rstrip("/"),
            "pipeline": self.pipeline_url.rstrip("/"),
            "serving": self.serving_url.rstrip("/"),
        }

    def private_key_pem(self) -> bytes:
        """The gateway's Ed25519 private key; created under the state dir when missing."""
        path = self.gateway_private_key_file
        if path is None:
            path, _ = ensure_gateway_keys(self.state_dir)
        return Path(path).read_bytes()

    @property
    def workload_tls_port(self) -> int:
        """The TLS listener's port, or 0: only the local runtime's workloads are relayed to
        it; on Kubernetes, pods have their cluster's own in-cluster config."""
        local = self.runtime.strip().lower() in ("", "local")
        return self.gateway_tls_port if local else 0

    def workload_api_certificate(self) -> CertificatePaths:
        """The TLS listener's key and certificate, issued by the platform's CA for the names
        workloads use (the sandbox's API address, ``kubernetes.default.svc`` and its kin)."""
        return ensure_api_certificate(self.state_dir / "keys", [API_ADDRESS[0]])

    def public_key_path(self) -> Path:
        if self.gateway_private_key_file is not None:
            return self.gateway_private_key_file.with_suffix(".pub")
        return ensure_gateway_keys(self.state_dir)[1]
