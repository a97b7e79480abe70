"""A tiny certificate authority for the local cluster, built on ``cryptography``.

Why this exists: a real control plane authenticates every component by client
certificate (the API server maps CN to the user name and O to groups) and every
HTTPS endpoint must present a certificate its clients can verify. kubeadm does
this in Go; we need the same result from Python. ``cryptography`` is already a
dependency of the project, so the certificates are built in-process with its
X.509 builder: no ``openssl`` binary, no subprocesses, no config files.

Design choices:

* ECDSA P-256 keys everywhere: generating one takes well under a millisecond
  (RSA-2048 takes 50-100 ms), and Kubernetes, etcd, Go's ``crypto/x509`` and
  Python's ``ssl`` all accept them. Private keys are unencrypted PKCS#8 PEM
  (``BEGIN PRIVATE KEY``, mode 0600), certificates and public keys PEM.
* Extensions that Go's ``crypto/x509`` (API server, etcd, kubectl) and Python's
  ``ssl`` verify, shaped like kubeadm's. CA: basicConstraints critical CA:TRUE; keyUsage critical
  keyCertSign, cRLSign, digitalSignature; subjectKeyIdentifier (no
  authorityKeyIdentifier: it is self-signed, as Go does it). Leaf:
  basicConstraints critical CA:FALSE; keyUsage critical digitalSignature (ECDSA
  keys sign; keyEncipherment is an RSA-only usage); extendedKeyUsage
  clientAuth and/or serverAuth; subjectKeyIdentifier; authorityKeyIdentifier
  (the CA's key id, which OpenSSL's strict mode -- Python 3.13's default --
  requires); subjectAltName with the IP addresses and DNS names asked for.
* Idempotent: each issued certificate is stored next to a small JSON "spec" (the
  subject, SANs, usages and the issuing CA's fingerprint). A call with the same
  spec reuses the files; a different spec, or a CA that was regenerated, reissues
  them. Restarting a cluster from the same state directory therefore keeps its
  identities, and a changed request never silently returns a stale certificate.
* Crash safety: files are written under temporary names and renamed into place,
  key before certificate before spec, so a half-written set is never mistaken for
  a good one. A CA (or ServiceAccount keypair) whose two files do not belong
  together, as a crash between the two renames could leave them, is repaired on
  the next call rather than reused.
* Long lifetimes (10 years): this is a throwaway local cluster; rotation is not
  something it needs to exercise.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes, PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agentapi.certificates import key_usage

__all__ = [
    "CertificateAuthority",
    "PkiError",
    "ensure_ca",
    "ensure_service_account_keypair",
    "issue_cert",
]

_VALIDITY_DAYS = 3650
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$")
_PUBLIC_MODE = 0o644  # certificates, public keys, specs
_PRIVATE_MODE = 0o600  # private keys
# CA key types whose signatures Go's crypto/x509 verifies (a CA key could come from elsewhere).
_ISSUER_KEY_TYPES = (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)


class PkiError(RuntimeError):
    """The CA's files cannot be used: unreadable, not PEM, or key and certificate do not match."""


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """A CA on disk: its directory (where issued certificates go), cert and key."""

    directory: Path
    cert: Path
    key: Path

    def fingerprint(self) -> str:
        """SHA-256 of the CA certificate file, used to detect a regenerated CA."""
        return hashlib.sha256(self.cert.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- files


def _write_file(path: Path, data: bytes, *, mode: int) -> None:
    """Write ``data`` to ``path`` atomically (temporary file + rename) with ``mode``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600 (never readable by others, even briefly)."""
    _write_file(path, data, mode=_PRIVATE_MODE)


def _write_public(path: Path, data: bytes) -> None:
    _write_file(path, data, mode=_PUBLIC_MODE)


# --------------------------------------------------------------------------- keys and names


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _private_pem(key: PrivateKeyTypes) -> bytes:
    """Unencrypted PKCS#8 PEM, what ``openssl genpkey`` writes and Go's ``tls.X509KeyPair`` reads."""
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def _public_der(key: PrivateKeyTypes) -> bytes:
    return key.public_key().public_bytes(
        encoding=serialization.Encoding.DER, format=serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _load_key(path: Path) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise PkiError(f"cannot load private key {path}: {e}") from e


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as e:
        raise PkiError(f"cannot load certificate {path}: {e}") from e


def _matches(cert: x509.Certificate, key: PrivateKeyTypes) -> bool:
    spki = cert.public_key().public_bytes(
        encoding=serialization.Encoding.DER, format=serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return spki == _public_der(key)


def _signature_hash(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | None:
    # Ed25519 signs the message itself; ECDSA and RSA sign a SHA-256 digest.
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _subject(*, cn: str, orgs: Sequence[str]) -> x509.Name:
    """One RDN per attribute, O before CN, as Kubernetes' own certificates order them.

    Raises ``ValueError`` for a value X.509 cannot carry (empty, or a CN over 64 characters).
    """
    try:
        return x509.Name(
            [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs] + [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        )
    except ValueError as e:
        raise ValueError(f"invalid certificate subject (cn={cn!r}, orgs={list(orgs)!r}): {e}") from e


def _validity() -> tuple[dt.datetime, dt.datetime]:
    """Valid from five minutes ago (as cfssl and cert-manager backdate): a clock that steps back a little,
    or a peer whose clock runs behind, must not see a certificate issued a moment ago as "not yet valid"."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return now - dt.timedelta(minutes=5), now + dt.timedelta(days=_VALIDITY_DAYS)


# --------------------------------------------------------------------------- CA


def _usable_pair(cert_path: Path, key_path: Path) -> bool:
    """Both files exist, parse, and the certificate is for that key."""
    if not (cert_path.is_file() and key_path.is_file()):
        return False
    try:
        return _matches(_load_cert(cert_path), _load_key(key_path))
    except PkiError:
        return False


def ensure_ca(directory: Path, /, *, cn: str = "podmigrate-localcluster-ca") -> CertificateAuthority:
    """Create (or reuse) a self-signed CA in ``directory`` as ``ca.crt``/``ca.key``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = CertificateAuthority(directory=directory, cert=directory / "ca.crt", key=directory / "ca.key")
    if _usable_pair(ca.cert, ca.key):
        return ca
    name = _subject(cn=cn, orgs=())
    key = _new_key()
    not_before, not_after = _validity()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(ca.key, _private_pem(key))
    _write_public(ca.cert, cert.public_bytes(serialization.Encoding.PEM))
    return ca


# --------------------------------------------------------------------------- leaf certificates


def issue_cert(
    *,
    ca: CertificateAuthority,
    name: str,
    cn: str,
    orgs: Sequence[str] = (),
    sans_ip: Sequence[str] = (),
    sans_dns: Sequence[str] = (),
    client: bool = False,
    server: bool = False,
) -> tuple[Path, Path]:
    """Issue (or reuse) ``<ca dir>/<name>.crt`` and ``<name>.key`` signed by ``ca``.

    ``cn`` becomes the Kubernetes user name and each of ``orgs`` a group. ``client``
    and ``server`` select the extended key usages (clientAuth, serverAuth); at least
    one is required. Returns ``(cert_path, key_path)``. Raises ``ValueError`` for a
    bad request (file name, IP address, DNS name, subject) before touching any file,
    and :class:`PkiError` if the CA's files cannot be used.
    """
    if not _NAME_RE.match(name):
        raise ValueError(f"certificate name {name!r} is not a safe file name")
    if not (client or server):
        raise ValueError("a certificate needs client=True, server=True, or both")
    ips = [str(ipaddress.ip_address(ip)) for ip in sans_ip]  # validates, normalizes
    subject = _subject(cn=cn, orgs=orgs)
    try:
        sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        sans += [x509.DNSName(d) for d in sans_dns]
    except ValueError as e:  # e.g. a non-ASCII DNS name: SANs carry A-labels (IDNA) only
        raise ValueError(f"invalid subjectAltName for {name!r}: {e}") from e
    cert_path = ca.directory / f"{name}.crt"
    key_path = ca.directory / f"{name}.key"
    spec_path = ca.directory / f"{name}.spec.json"
    spec = {
        "ca": ca.fingerprint(),
        "cn": cn,
        "orgs": list(orgs),
        "ips": ips,
        "dns": list(sans_dns),
        "client": client,
        "server": server,
    }
    if cert_path.is_file() and key_path.is_file() and spec_path.is_file():
        try:
            if json.loads(spec_path.read_text()) == spec:
                return cert_path, key_path
        except ValueError:
            pass  # corrupt spec: reissue

    ca_cert = _load_cert(ca.cert)
    ca_key = _load_key(ca.key)
    if not isinstance(ca_key, _ISSUER_KEY_TYPES):
        raise PkiError(f"CA key {ca.key} is of a type that cannot sign certificates")
    if not _matches(ca_cert, ca_key):
        raise PkiError(f"CA key {ca.key} does not belong to CA certificate {ca.cert}")
    try:
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
            ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        )
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())

    key = _new_key()
    usages = [oid for oid, on in ((ExtendedKeyUsageOID.CLIENT_AUTH, client), (ExtendedKeyUsageOID.SERVER_AUTH, server)) if on]
    not_before, not_after = _validity()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(aki, critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, _signature_hash(ca_key))

    ca.directory.mkdir(parents=True, exist_ok=True)
    spec_path.unlink(missing_ok=True)  # invalidate first: a crash below forces a reissue
    _write_private(key_path, _private_pem(key))
    _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    _write_public(spec_path, (json.dumps(spec, indent=2) + "\n").encode())
    return cert_path, key_path


# --------------------------------------------------------------------------- ServiceAccount keys


def ensure_service_account_keypair(directory: Path, /) -> tuple[Path, Path]:
    """Create (or reuse) the ServiceAccount token signing keypair: ``(sa.pub, sa.key)``.

    The API server signs tokens with the private key
    (``--service-account-signing-key-file``) and verifies them with the public one
    (``--service-account-key-file``); the controller manager's legacy token
    controller gets the private key. This is a bare keypair, not a certificate:
    ``sa.key`` is PKCS#8 PEM (``BEGIN PRIVATE KEY``, read by client-go's
    ``keyutil.ParsePrivateKeyPEM``; an ECDSA P-256 key signs tokens as ES256) and
    ``sa.pub`` is SubjectPublicKeyInfo PEM (``BEGIN PUBLIC KEY``, read by
    ``keyutil.ParsePublicKeysPEM``, which does not take a PKCS#8 EC private key).

    An existing ``sa.key`` is kept (tokens it signed stay valid); ``sa.pub`` is
    rewritten from it if missing or not its public half.
    """
    directory.mkdir(parents=True, exist_ok=True)
    pub, key_path = directory / "sa.pub", directory / "sa.key"
    key: PrivateKeyTypes | None = None
    if key_path.is_file():
        try:
            key = _load_key(key_path)
        except PkiError:
            key = None  # unreadable: replace it
    if key is None:
        key = _new_key()
        _write_private(key_path, _private_pem(key))
    want = _public_der(key)
    try:
        have = serialization.load_pem_public_key(pub.read_bytes()).public_bytes(
            encoding=serialization.Encoding.DER, format=serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except (OSError, ValueError, TypeError):
        have = b""
    if have != want:
        pem = key.public_key().public_bytes(
            encoding=serialization.Encoding.PEM, format=serialization.PublicFormat.SubjectPublicKeyInfo
        )
        _write_public(pub, pem)
    return pub, key_path
