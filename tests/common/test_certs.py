"""The platform's CA and the certificate of the workloads' TLS listener."""

from __future__ import annotations

import concurrent.futures
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509

from services.common.certs import (
    KUBERNETES_DNS_NAMES,
    api_paths,
    ca_paths,
    ensure_api_certificate,
    ensure_workload_ca,
)


def test_ensure_workload_ca_private_and_idempotent(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    first = ensure_workload_ca(keys)
    assert first == ca_paths(keys)
    assert keys.stat().st_mode & 0o777 == 0o700
    assert first.key.stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate(first.cert.read_bytes())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    pem = first.cert.read_bytes()
    assert ensure_workload_ca(keys).cert.read_bytes() == pem


def test_ensure_workload_ca_concurrent_starts_agree(tmp_path: Path) -> None:
    """Five processes starting at once (the gateway and four services) make one CA."""
    keys = tmp_path / "keys"
    with concurrent.futures.ProcessPoolExecutor(5) as pool:
        made = list(pool.map(ensure_workload_ca, [keys] * 5))
    assert {p.cert.read_bytes() for p in made} == {ca_paths(keys).cert.read_bytes()}
    assert not [n for n in os.listdir(keys) if n.endswith(".tmp")]


def test_ensure_api_certificate_names_and_chain(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    paths = ensure_api_certificate(keys, ["127.0.0.2"])
    assert paths == api_paths(keys)
    assert paths.key.stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == set(KUBERNETES_DNS_NAMES)
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.2")]
    # The stdlib verifies the chain and the names as a client inside a workload would.
    client = ssl.create_default_context(cafile=str(ca_paths(keys).cert))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(paths.cert, paths.key)
    for name in ("kubernetes.default.svc", "127.0.0.2"):
        assert _handshake(client, server, name) is None
    assert "mismatch" in (_handshake(client, server, "example.com") or "")


def test_ensure_api_certificate_reissued_only_when_needed(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    first = ensure_api_certificate(keys, ["127.0.0.2"]).cert.read_bytes()
    assert ensure_api_certificate(keys, ["127.0.0.2"]).cert.read_bytes() == first
    other_names = ensure_api_certificate(keys, ["127.0.0.5"]).cert.read_bytes()
    assert other_names != first
    # A new CA (the old one deleted to rotate it): the certificate follows it.
    ca_files = ca_paths(keys)
    ca_files.key.unlink()
    ca_files.cert.unlink()
    rotated = ensure_api_certificate(keys, ["127.0.0.5"]).cert.read_bytes()
    assert rotated != other_names
    cert = x509.load_pem_x509_certificate(rotated)
    ca = x509.load_pem_x509_certificate(ca_paths(keys).cert.read_bytes())
    cert.verify_directly_issued_by(ca)


def _handshake(client: ssl.SSLContext, server: ssl.SSLContext, name: str) -> str | None:
    """Run a TLS handshake in memory; None once the client verified the server, else the
    client's verification error."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    tls_client = client.wrap_bio(c_in, c_out, server_hostname=name)
    tls_server = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        try:
            tls_client.do_handshake()
            return None
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLCertVerificationError as exc:
            return str(exc)
        s_in.write(c_out.read())
        try:
            tls_server.do_handshake()
        except ssl.SSLWantReadError:
            pass
        c_in.write(s_out.read())
    raise AssertionError("the handshake did not finish")
