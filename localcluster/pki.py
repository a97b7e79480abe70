"""A tiny certificate authority for the local cluster, driven by the ``openssl`` CLI.

Why this exists: a real control plane authenticates every component by client
certificate (the API server maps CN to the user name and O to groups) and every
HTTPS endpoint must present a certificate its clients can verify. kubeadm does
this in Go; we need the same result from Python with no new dependencies, so we
shell out to ``openssl``, which is on every machine this project runs on.

Design choices:

* ECDSA P-256 keys everywhere: generating one takes about a millisecond (RSA-2048
  takes 50-100 ms), and Kubernetes, etcd and Python's ``ssl`` all accept them.
* Idempotent: each issued certificate is stored next to a small JSON "spec" (the
  subject, SANs, usages and the issuing CA's fingerprint). A call with the same
  spec reuses the files; a different spec, or a CA that was regenerated, reissues
  them. Restarting a cluster from the same state directory therefore keeps its
  identities, and a changed request never silently returns a stale certificate.
* Crash safety: files are written under temporary names and renamed into place,
  certificate before spec, so a half-written pair is never mistaken for a good one.
* Long lifetimes (10 years): this is a throwaway local cluster; rotation is not
  something it needs to exercise.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import secrets
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CertificateAuthority",
    "PkiError",
    "ensure_ca",
    "ensure_service_account_keypair",
    "issue_cert",
]

_VALIDITY_DAYS = 3650
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$")


class PkiError(RuntimeError):
    """An ``openssl`` invocation failed; the message carries its stderr."""


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """A CA on disk: its directory (where issued certificates go), cert and key."""

    directory: Path
    cert: Path
    key: Path

    def fingerprint(self) -> str:
        """SHA-256 of the CA certificate file, used to detect a regenerated CA."""
        return hashlib.sha256(self.cert.read_bytes()).hexdigest()


def _openssl(*args: str) -> None:
    proc = subprocess.run(
        ["openssl", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise PkiError(f"openssl {args[0]} failed ({proc.returncode}): {proc.stderr.strip()}")


def _subject(*, cn: str, orgs: Sequence[str]) -> str:
    """An ``-subj`` string; O before CN, as Kubernetes' own certificates order them."""

    def esc(value: str) -> str:
        return re.sub(r"([\\/+=])", r"\\\1", value)

    return "".join(f"/O={esc(o)}" for o in orgs) + f"/CN={esc(cn)}"


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _ec_key(*, out: Path) -> None:
    """Generate a P-256 private key (PKCS#8 PEM, mode 0600) at ``out``, atomically."""
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmp_key = Path(tmp) / "key.pem"
        _openssl(
            "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-out", str(tmp_key),
        )  # fmt: skip
        _write_private(out, tmp_key.read_bytes())


def ensure_ca(directory: Path, /, *, cn: str = "podmigrate-localcluster-ca") -> CertificateAuthority:
    """Create (or reuse) a self-signed CA in ``directory`` as ``ca.crt``/``ca.key``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = CertificateAuthority(directory=directory, cert=directory / "ca.crt", key=directory / "ca.key")
    if ca.cert.is_file() and ca.key.is_file():
        return ca
    _ec_key(out=ca.key)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        cnf = Path(tmp) / "ca.cnf"
        # Our own config, so the host's openssl.cnf defaults never leak in.
        cnf.write_text(
            "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\n"
            "[v3_ca]\n"
            "basicConstraints = critical, CA:TRUE\n"
            "keyUsage = critical, keyCertSign, cRLSign, digitalSignature\n"
            "subjectKeyIdentifier = hash\n"
        )
        tmp_cert = Path(tmp) / "ca.crt"
        _openssl(
            "req", "-x509", "-new", "-config", str(cnf), "-extensions", "v3_ca",
            "-key", str(ca.key), "-subj", _subject(cn=cn, orgs=()), "-utf8",
            "-days", str(_VALIDITY_DAYS), "-sha256",
            "-set_serial", f"0x{secrets.token_hex(16)}", "-out", str(tmp_cert),
        )  # fmt: skip
        tmp_cert.replace(ca.cert)
    return ca


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
    one is required. Returns ``(cert_path, key_path)``.
    """
    if not _NAME_RE.match(name):
        raise ValueError(f"certificate name {name!r} is not a safe file name")
    if not (client or server):
        raise ValueError("a certificate needs client=True, server=True, or both")
    ips = [str(ipaddress.ip_address(ip)) for ip in sans_ip]  # validates, normalizes
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

    usages = [u for u, on in (("clientAuth", client), ("serverAuth", server)) if on]
    ext = [
        "basicConstraints = critical, CA:FALSE",
        # ECDSA keys sign; keyEncipherment is an RSA-only usage.
        "keyUsage = critical, digitalSignature",
        f"extendedKeyUsage = {', '.join(usages)}",
        "subjectKeyIdentifier = hash",
        "authorityKeyIdentifier = keyid",
    ]
    sans = [f"IP:{ip}" for ip in ips] + [f"DNS:{d}" for d in sans_dns]
    if sans:
        ext.append(f"subjectAltName = {', '.join(sans)}")

    spec_path.unlink(missing_ok=True)  # invalidate first: a crash below forces a reissue
    _ec_key(out=key_path)
    with tempfile.TemporaryDirectory(dir=ca.directory) as tmp:
        csr = Path(tmp) / "req.csr"
        extfile = Path(tmp) / "ext.cnf"
        tmp_cert = Path(tmp) / "cert.crt"
        extfile.write_text("[v3]\n" + "\n".join(ext) + "\n")
        _openssl(
            "req", "-new", "-config", os.devnull, "-key", str(key_path),
            "-subj", _subject(cn=cn, orgs=orgs), "-utf8", "-out", str(csr),
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
            "-set_serial", f"0x{secrets.token_hex(16)}", "-days", str(_VALIDITY_DAYS),
            "-sha256", "-extfile", str(extfile), "-extensions", "v3", "-out", str(tmp_cert),
        )  # fmt: skip
        tmp_cert.replace(cert_path)
    spec_path.write_text(json.dumps(spec, indent=2) + "\n")
    return cert_path, key_path


def ensure_service_account_keypair(directory: Path, /) -> tuple[Path, Path]:
    """Create (or reuse) the ServiceAccount token signing keypair: ``(sa.pub, sa.key)``.

    The API server signs tokens with the private key
    (``--service-account-signing-key-file``) and verifies them with the public one
    (``--service-account-key-file``); the controller manager's legacy token
    controller gets the private key. This is a bare keypair, not a certificate.
    """
    directory.mkdir(parents=True, exist_ok=True)
    pub, key = directory / "sa.pub", directory / "sa.key"
    if pub.is_file() and key.is_file():
        return pub, key
    _ec_key(out=key)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        tmp_pub = Path(tmp) / "sa.pub"
        _openssl("pkey", "-in", str(key), "-pubout", "-out", str(tmp_pub))
        tmp_pub.replace(pub)
    return pub, key
