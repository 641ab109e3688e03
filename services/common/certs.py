"""The platform's own certificate authority for the API that workloads call over TLS.

Kubernetes clients inside a workload (``kubernetes.config.load_incluster_config()``, the Katib
SDK, kfp) only speak HTTPS to ``KUBERNETES_SERVICE_HOST`` and verify the server with the
``ca.crt`` beside their token. So the platform makes a CA of its own at first start, keeps its
private key with its other keys (``<state_dir>/keys``, a 0700 directory of the platform's
user; the key file is 0600), and gives workloads only the certificate. The gateway serves its
TLS listener for workloads with a certificate this CA issues (:func:`ensure_api_certificate`),
whose names are the ones a pod uses for its API server.

ECDSA P-256 throughout: a handshake costs a fraction of what RSA-2048 costs the gateway.
"""

from __future__ import annotations

import datetime
import fcntl
import ipaddress
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_STEM = "workload-ca"
API_STEM = "workload-api"
CA_LIFETIME = datetime.timedelta(days=3650)
API_LIFETIME = datetime.timedelta(days=365)
#: An API certificate this close to its end is issued anew at the gateway's next start.
RENEW_BEFORE = datetime.timedelta(days=30)
#: The names a pod uses for its cluster's API server (the ``kubernetes`` Service).
KUBERNETES_DNS_NAMES = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class CertificatePaths:
    """A private key (mode 0600) and its certificate (PEM files)."""

    key: Path
    cert: Path


def ca_paths(keys_dir: Path) -> CertificatePaths:
    return CertificatePaths(keys_dir / f"{CA_STEM}.key", keys_dir / f"{CA_STEM}.crt")


def api_paths(keys_dir: Path) -> CertificatePaths:
    return CertificatePaths(keys_dir / f"{API_STEM}.key", keys_dir / f"{API_STEM}.crt")


@contextmanager
def _keys_lock(keys_dir: Path) -> Iterator[None]:
    """Serialize creation: the gateway and four services may all start at once."""
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    keys_dir.chmod(0o700)  # the platform's user alone (docs/security.md)
    fd = os.open(keys_dir / "certs.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def ensure_workload_ca(keys_dir: Path) -> CertificatePaths:
    """The platform's CA in ``keys_dir`` (``workload-ca.key`` 0600, ``workload-ca.crt``),
    created if missing. Idempotent and safe against concurrent starts."""
    paths = ca_paths(keys_dir)
    if paths.key.exists() and paths.cert.exists():
        return paths
    with _keys_lock(keys_dir):
        if paths.key.exists() and paths.cert.exists():
            return paths
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shipyard workload API CA")])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        # The key first: a certificate without its key is never left behind.
        _write(paths.key, _key_pem(key), 0o600)
        _write(paths.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return paths


def read_ca_certificate(keys_dir: Path) -> bytes:
    """The CA's certificate (PEM): what workloads get as ``ca.crt``."""
    return ensure_workload_ca(keys_dir).cert.read_bytes()


def _sans(ip_addresses: Iterable[str], dns_names: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    return names


def _current(paths: CertificatePaths, ca: x509.Certificate, wanted: set[str]) -> bool:
    """True if the API certificate on disk was issued by ``ca``, names ``wanted`` and is not
    near its end."""
    try:
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        paths.key.stat()
    except (FileNotFoundError, ValueError):
        return False
    try:
        cert.verify_directly_issued_by(ca)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    have = {str(n.value) for n in sans}
    return have == wanted and cert.not_valid_after_utc - _now() > RENEW_BEFORE


def ensure_api_certificate(
    keys_dir: Path,
    ip_addresses: Iterable[str],
    dns_names: Iterable[str] = KUBERNETES_DNS_NAMES,
) -> CertificatePaths:
    """The gateway's certificate for the workloads' TLS listener, issued by the platform's CA
    for these names; issued anew when missing, from another CA, for other names, or within
    :data:`RENEW_BEFORE` of its end."""
    ips, dns = list(ip_addresses), list(dns_names)
    wanted = {*dns, *(str(ipaddress.ip_address(a)) for a in ips)}
    ca_files = ensure_workload_ca(keys_dir)
    ca_cert = x509.load_pem_x509_certificate(ca_files.cert.read_bytes())
    paths = api_paths(keys_dir)
    if _current(paths, ca_cert, wanted):
        return paths
    with _keys_lock(keys_dir):
        if _current(paths, ca_cert, wanted):
            return paths
        ca_key = serialization.load_pem_private_key(ca_files.key.read_bytes(), None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + API_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(x509.SubjectAlternativeName(_sans(ips, dns)), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write(paths.key, _key_pem(key), 0o600)
        _write(paths.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return paths
