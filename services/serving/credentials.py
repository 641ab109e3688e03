"""S3 credentials for a storageUri, found as KServe finds them: through a ServiceAccount.

An InferenceService's ``spec.predictor.serviceAccountName`` names a ServiceAccount of its
namespace; its ``secrets`` name Secrets, and the first one holding ``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY`` (or KServe's other default names, ``awsAccessKeyID`` and
``awsSecretAccessKey``) gives the credentials. KServe's annotations on that Secret (or, for
each one the Secret lacks, on the ServiceAccount) say where and how
(kserve/kserve pkg/credentials/s3):

``serving.kserve.io/s3-endpoint``
    ``host[:port]`` of the S3 server (a scheme, if given, is honoured); default AWS,
    ``s3.<region>.amazonaws.com``;
``serving.kserve.io/s3-usehttps``
    ``"0"`` for plain HTTP; anything else (or unset) is HTTPS;
``serving.kserve.io/s3-region``
    the signing region (default ``us-east-1``);
``serving.kserve.io/s3-verifyssl``
    ``"0"`` (or ``false``) skips the TLS certificate check;
``serving.kserve.io/s3-useanoncredential``
    ``"true"`` ignores the keys and reads anonymously (a public bucket).

KServe no longer reads the older ``serving.kubeflow.org/s3-*`` spellings, and neither does
shipyard. The credentials go only to the serving service's own S3 client: never into the
model server's environment, a status, an event or a log line (``S3Credentials`` keeps the
keys out of its ``repr``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import AsyncSession

from services.common.objectstore import DEFAULT_REGION, S3Config
from services.common.resources import ResourceStore
from services.serving.models import SECRET, SERVICE_ACCOUNT

ANNOTATION = "serving.kserve.io/"
ENDPOINT, USE_HTTPS, REGION = (
    f"{ANNOTATION}s3-endpoint",
    f"{ANNOTATION}s3-usehttps",
    f"{ANNOTATION}s3-region",
)
VERIFY_SSL, ANONYMOUS = f"{ANNOTATION}s3-verifyssl", f"{ANNOTATION}s3-useanoncredential"
S3_ANNOTATIONS = (ENDPOINT, USE_HTTPS, REGION, VERIFY_SSL, ANONYMOUS)
ACCESS_KEY_NAMES = ("AWS_ACCESS_KEY_ID", "awsAccessKeyID")
SECRET_KEY_NAMES = ("AWS_SECRET_ACCESS_KEY", "awsSecretAccessKey")
_FALSE = ("0", "false", "False", "FALSE")
_TRUE = ("1", "true", "True", "TRUE")


class CredentialsError(Exception):
    """The ServiceAccount or Secret is missing or unusable; the message says which (never a
    value)."""


@dataclass(frozen=True)
class S3Credentials:
    """Where an external S3 store is and how to sign in: one Secret's worth."""

    endpoint: str  # http(s)://host[:port]
    region: str
    verify_tls: bool
    anonymous: bool
    secret: str  # "<namespace>/<name>" of the Secret, for messages
    access_key_id: str = field(default="", repr=False)
    secret_access_key: str = field(default="", repr=False)

    @property
    def host(self) -> str:
        return urlsplit(self.endpoint).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.endpoint)
        return parts.port or (443 if parts.scheme == "https" else 80)

    def fingerprint(self) -> str:
        """A digest of everything that decides the download: a changed Secret is a new
        attempt at once, not after the failed one's back-off."""
        h = hashlib.sha256()
        for part in (
            self.endpoint,
            self.region,
            str(self.verify_tls),
            str(self.anonymous),
            self.access_key_id,
            self.secret_access_key,
        ):
            h.update(part.encode() + b"\0")
        return h.hexdigest()[:32]

    def config(self, bucket: str, endpoint: str | None = None) -> S3Config:
        """The client's S3Config for ``bucket``; ``endpoint``: the URL to connect to (the
        checked address), when not the annotation's."""
        return S3Config(
            endpoint=endpoint or self.endpoint,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
            region=self.region,
            bucket=bucket,
            verify_tls=self.verify_tls,
            anonymous=self.anonymous,
        )


def endpoint_url(annotations: dict[str, str], region: str) -> str:
    """KServe's rule: ``https://`` + the endpoint annotation, ``http://`` when usehttps is 0."""
    raw = (annotations.get(ENDPOINT) or "").strip()
    if not raw:
        return f"https://s3.{region}.amazonaws.com"
    if "://" in raw:
        return raw.rstrip("/")
    scheme = "http" if annotations.get(USE_HTTPS, "").strip() in _FALSE else "https"
    return f"{scheme}://{raw.rstrip('/')}"


def annotation_problem(annotations: dict[str, str], where: str) -> str | None:
    """What is wrong with the S3 annotations of ``where`` (None: usable)."""
    raw = (annotations.get(ENDPOINT) or "").strip()
    if raw:
        url = raw if "://" in raw else f"https://{raw}"
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            return f"{where}: annotation {ENDPOINT} {raw!r} has a bad port"
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return f"{where}: annotation {ENDPOINT} must be host[:port] (or an http(s) URL)"
        if parts.username or parts.password or parts.path.strip("/") or parts.query:
            return f"{where}: annotation {ENDPOINT} must be host[:port], without a path"
    for name in (USE_HTTPS, VERIFY_SSL, ANONYMOUS):
        value = annotations.get(name)
        if value is not None and value.strip() not in (*_TRUE, *_FALSE):
            return f'{where}: annotation {name} must be "0", "1", "true" or "false"'
    return None


def _value(data: dict[str, Any], names: tuple[str, ...]) -> str | None:
    for name in names:
        if name in data:
            try:
                return base64.b64decode(data[name], validate=True).decode()
            except (binascii.Error, ValueError, UnicodeDecodeError):
                return None
    return None


async def s3_credentials(
    store: ResourceStore,
    namespace: str,
    service_account: str,
    session: AsyncSession | None = None,
) -> S3Credentials:
    """The S3 credentials of ``service_account`` in ``namespace``; CredentialsError (naming
    what is missing) if there are none."""
    account = await store.find(SERVICE_ACCOUNT, namespace, service_account, session=session)
    if account is None:
        raise CredentialsError(
            f"ServiceAccount {namespace}/{service_account} (spec.predictor.serviceAccountName) "
            "not found: create it with secrets: [{name: <a Secret with AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY>}]"
        )
    refs = [
        str(r["name"])
        for r in account.get("secrets") or []
        if isinstance(r, dict) and r.get("name")
    ]
    if not refs:
        raise CredentialsError(
            f"ServiceAccount {namespace}/{service_account} names no Secret (secrets: []); "
            "add the Secret with the S3 credentials to its secrets"
        )
    account_notes = (account.get("metadata") or {}).get("annotations") or {}
    missing: list[str] = []
    for name in refs:
        secret = await store.find(SECRET, namespace, name, session=session)
        if secret is None:
            missing.append(f"Secret {namespace}/{name} not found")
            continue
        notes = {
            k: v
            for k, v in {
                **account_notes,
                **((secret.get("metadata") or {}).get("annotations") or {}),
            }.items()
            if k in S3_ANNOTATIONS
        }
        data = secret.get("data") or {}
        anonymous = (notes.get(ANONYMOUS) or "").strip() in _TRUE
        key_id, key = _value(data, ACCESS_KEY_NAMES), _value(data, SECRET_KEY_NAMES)
        if not anonymous and (key_id is None or key is None):
            missing.append(
                f"Secret {namespace}/{name} has no AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )
            continue
        problem = annotation_problem(notes, f"Secret {namespace}/{name}")
        if problem is not None:
            raise CredentialsError(problem)
        region = (notes.get(REGION) or "").strip() or DEFAULT_REGION
        return S3Credentials(
            endpoint=endpoint_url(notes, region),
            region=region,
            verify_tls=(notes.get(VERIFY_SSL) or "").strip() not in _FALSE,
            anonymous=anonymous,
            secret=f"{namespace}/{name}",
            access_key_id="" if anonymous else key_id or "",
            secret_access_key="" if anonymous else key or "",
        )
    raise CredentialsError(
        f"ServiceAccount {namespace}/{service_account} has no usable S3 credentials: "
        + "; ".join(missing)
    )
