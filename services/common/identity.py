"""Identity assertions: how the gateway tells a service who is calling.

The gateway authenticates the user (OIDC cookie, bearer JWT, or single-user
mode), authorizes the namespace, and forwards the request with a short-lived
JWT in the ``X-Shipyard-Identity`` header, signed with the gateway's Ed25519
key. Services verify it with the gateway's public key and never trust a bare
user header (unlike Kubeflow's ``kubeflow-userid``).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

ASSERTION_HEADER = "x-shipyard-identity"
ISSUER = "shipyard-gateway"
AUDIENCE = "shipyard-services"
ALGORITHM = "Ed25519"  # RFC 9864 fully-specified name for EdDSA over Ed25519
DEFAULT_TTL_SECONDS = 60
LEEWAY_SECONDS = 5

ROLES = ("view", "edit", "admin")


@dataclass(frozen=True)
class Identity:
    """A verified caller: the user, their groups, and the role granted on ``namespace``."""

    user: str
    groups: tuple[str, ...] = ()
    namespace: str | None = None
    role: str = "view"
    cluster_admin: bool = False
    extra: dict[str, str] = field(default_factory=dict)
    # Roles in further namespaces, for requests whose namespace only the service can tell
    # (the KFP API names runs and experiments by id): the service checks the object's own.
    grants: dict[str, str] = field(default_factory=dict)

    def allows(self, needed: str, namespace: str | None) -> bool:
        """True if this identity may act with role ``needed`` on ``namespace``."""
        if self.cluster_admin:
            return True
        if namespace is None or namespace == self.namespace:
            role: str | None = self.role
        else:
            role = self.grants.get(namespace)
        return role is not None and ROLES.index(role) >= ROLES.index(needed)


class AssertionError_(Exception):
    """The identity assertion is missing, malformed, expired or badly signed."""


def generate_keypair() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair as (private PEM, public PEM)."""
    key = OKPKey.generate_key("Ed25519")
    return key.as_pem(private=True), key.as_pem(private=False)


def ensure_gateway_keys(state_dir: Path) -> tuple[Path, Path]:
    """Create the platform's key pairs in ``state_dir/keys`` if missing.

    ``gateway.key``/``.pub`` sign and verify identity assertions; ``serviceaccounts.key``/
    ``.pub`` sign and verify workloads' service-account tokens. Returns the gateway pair.
    """
    ensure_keypair(state_dir / "keys" / "serviceaccounts")
    return ensure_keypair(state_dir / "keys" / "gateway")


def ensure_keypair(stem: Path) -> tuple[Path, Path]:
    """``<stem>.key`` (mode 0600) and ``<stem>.pub``, created if missing."""
    keys = stem.parent
    private, public = stem.with_suffix(".key"), stem.with_suffix(".pub")
    if not private.exists() or not public.exists():
        keys.mkdir(parents=True, exist_ok=True, mode=0o700)
        keys.chmod(0o700)  # the platform's user alone (docs/security.md)
        priv_pem, pub_pem = generate_keypair()
        tmp = private.with_suffix(".tmp")
        tmp.write_bytes(priv_pem)
        tmp.chmod(0o600)
        tmp.replace(private)
        public.write_bytes(pub_pem)
    return private, public


class AssertionSigner:
    """Signs identity assertions (used by the gateway and by tests)."""

    def __init__(self, private_pem: bytes, ttl_seconds: int = DEFAULT_TTL_SECONDS) -> None:
        self._key = OKPKey.import_key(private_pem)
        self.ttl_seconds = ttl_seconds

    def sign(self, identity: Identity, *, now: float | None = None) -> str:
        issued = int(now if now is not None else time.time())
        claims: dict[str, object] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": identity.user,
            "groups": list(identity.groups),
            "ns": identity.namespace,
            "role": identity.role,
            "adm": identity.cluster_admin,
            "iat": issued,
            "exp": issued + self.ttl_seconds,
            "jti": uuid.uuid4().hex,
        }
        if identity.extra:
            claims["ext"] = dict(identity.extra)
        if identity.grants:
            claims["grants"] = dict(identity.grants)
        return jwt.encode({"alg": ALGORITHM}, claims, self._key, algorithms=[ALGORITHM])


class AssertionVerifier:
    """Verifies identity assertions with the gateway's public key."""

    def __init__(self, public_pem: bytes) -> None:
        self._key = OKPKey.import_key(public_pem)
        self._registry = jwt.JWTClaimsRegistry(
            leeway=LEEWAY_SECONDS,
            iss={"essential": True, "value": ISSUER},
            aud={"essential": True, "value": AUDIENCE},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
        )

    def verify(self, token: str) -> Identity:
        try:
            decoded = jwt.decode(token, self._key, algorithms=[ALGORITHM])
            self._registry.validate(decoded.claims)
        except (JoseError, ValueError, TypeError) as exc:
            raise AssertionError_(f"invalid identity assertion: {exc}") from None
        claims = decoded.claims
        role = claims.get("role", "view")
        if role not in ROLES:
            raise AssertionError_(f"invalid identity assertion: unknown role {role!r}")
        return Identity(
            user=str(claims["sub"]),
            groups=tuple(claims.get("groups") or ()),
            namespace=claims.get("ns"),
            role=role,
            cluster_admin=bool(claims.get("adm", False)),
            extra=dict(claims.get("ext") or {}),
            grants={str(k): str(v) for k, v in (claims.get("grants") or {}).items() if v in ROLES},
        )


class AssertionMinter:
    """Test helper: a throwaway key pair that mints assertions for any identity."""

    def __init__(self) -> None:
        self.private_pem, self.public_pem = generate_keypair()
        self.signer = AssertionSigner(self.private_pem)

    def headers(
        self,
        user: str = "user@example.com",
        namespace: str | None = None,
        role: str = "admin",
        groups: tuple[str, ...] = (),
        cluster_admin: bool = False,
    ) -> dict[str, str]:
        ident = Identity(
            user=user, groups=groups, namespace=namespace, role=role, cluster_admin=cluster_admin
        )
        return {ASSERTION_HEADER: self.signer.sign(ident)}
