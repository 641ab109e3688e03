"""Machine identities: namespace-scoped service-account tokens.

Workloads (trials, pipeline steps, notebooks) call the platform API as their namespace,
not as a person. The runtime gives every workload a short-lived token bound to it, in the
in-cluster layout (``/var/run/secrets/kubernetes.io/serviceaccount/token``, refreshed in
place; ``SHIPYARD_TOKEN_FILE`` names it and ``SHIPYARD_URL`` the API), and the gateway
also issues them on ``POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token``. A token
is an Ed25519 JWT, subject ``system:serviceaccount:{ns}:default-editor``, that grants edit on
that namespace only. Its key pair is not the gateway's assertion key: services hold the
service-account private key to mint tokens for their workloads, and never the gateway's.
"""

from __future__ import annotations

import time
import uuid

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

SA_ISSUER = "shipyard-gateway/serviceaccounts"
SA_AUDIENCE = "shipyard-gateway"
SA_PREFIX = "system:serviceaccount:"
DEFAULT_SA = "default-editor"
ALGORITHM = "Ed25519"


class ServiceAccountError(Exception):
    """The service-account token is invalid."""


def subject_for(namespace: str, name: str = DEFAULT_SA) -> str:
    return f"{SA_PREFIX}{namespace}:{name}"


def namespace_of(subject: str) -> str | None:
    """The namespace a service-account subject belongs to, or None for people."""
    if not subject.startswith(SA_PREFIX):
        return None
    rest = subject[len(SA_PREFIX) :].split(":")
    return rest[0] if len(rest) == 2 and rest[0] else None


class ServiceAccountTokens:
    """Issues (with the private key) and verifies (with either) service-account tokens."""

    def __init__(self, key_pem: bytes, ttl_seconds: int = 3600) -> None:
        self._key = OKPKey.import_key(key_pem)
        self.ttl_seconds = ttl_seconds

    def issue(
        self,
        namespace: str,
        name: str = DEFAULT_SA,
        ttl_seconds: int | None = None,
        *,
        binding: str | None = None,
        service: str | None = None,
    ) -> str:
        """A token for ``namespace``; ``binding`` names the workload run it belongs to
        (``<ns>/<workload>/<run id>``, as Kubernetes binds projected tokens to a pod) and
        ``service`` the service whose runtime ran it, which the gateway asks whether the run
        is still going (a bound token dies with its run)."""
        now = int(time.time())
        claims = {
            "iss": SA_ISSUER,
            "aud": SA_AUDIENCE,
            "sub": subject_for(namespace, name),
            "ns": namespace,
            "iat": now,
            "nbf": now,
            "exp": now + (ttl_seconds or self.ttl_seconds),
            "jti": uuid.uuid4().hex,
        }
        if binding:
            claims["wl"] = binding
        if service:
            claims["svc"] = service
        return jwt.encode(
            {"alg": ALGORITHM, "typ": "JWT"}, claims, self._key, algorithms=[ALGORITHM]
        )

    def verify(self, token: str) -> tuple[str, str]:
        """Return (subject, namespace) of a valid token."""
        sub, ns, _ = self.verify_bound(token)
        return sub, ns

    def verify_bound(self, token: str) -> tuple[str, str, tuple[str, str] | None]:
        """(subject, namespace, (service, run binding) or None for an unbound token)."""
        try:
            decoded = jwt.decode(token, self._key, algorithms=[ALGORITHM])
            jwt.JWTClaimsRegistry(
                leeway=5,
                iss={"essential": True, "value": SA_ISSUER},
                aud={"essential": True, "value": SA_AUDIENCE},
                sub={"essential": True},
                exp={"essential": True},
            ).validate(decoded.claims)
        except (JoseError, ValueError, TypeError) as exc:
            raise ServiceAccountError(f"invalid service-account token: {exc}") from None
        sub = str(decoded.claims["sub"])
        ns = namespace_of(sub)
        if ns is None or ns != decoded.claims.get("ns"):
            raise ServiceAccountError("invalid service-account subject")
        wl, svc = decoded.claims.get("wl"), decoded.claims.get("svc")
        if wl is not None and (not isinstance(wl, str) or not str(wl).startswith(f"{ns}/")):
            raise ServiceAccountError("invalid service-account binding")
        return sub, ns, (str(svc or ""), wl) if wl else None
