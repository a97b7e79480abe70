"""Unit tests for localcluster.pki: no cluster, only files in a temporary directory.

Every certificate is checked with ``cryptography`` and, where the tools are on the
machine, independently: ``openssl verify`` (strict mode, with the TLS purpose), a
mutual-TLS handshake between two Python ``ssl`` contexts (what the node servers and
Python clients do), and a small Go program using ``crypto/tls`` and ``crypto/x509``
(what the API server, etcd and kubectl do).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import ssl
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from localcluster import pki

SERVER_IPS = ["127.0.0.1", "10.96.0.1", "::1"]
SERVER_DNS = ["localhost", "kubernetes", "kubernetes.default.svc.cluster.local"]


# --------------------------------------------------------------------------- helpers


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def load_key(path: Path):
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def ext(cert: x509.Certificate, cls: type):
    return cert.extensions.get_extension_for_class(cls)


def eku(cert: x509.Certificate) -> set:
    return set(ext(cert, x509.ExtendedKeyUsage).value)


def sans(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    san = ext(cert, x509.SubjectAlternativeName).value
    return {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}, set(san.get_values_for_type(x509.DNSName))


def assert_leaf_signed_by(cert_path: Path, key_path: Path, ca: pki.CertificateAuthority) -> x509.Certificate:
    """Signature, issuer, key pair, key file mode and the extensions every leaf must have."""
    cert, ca_cert = load_cert(cert_path), load_cert(ca.cert)
    cert.verify_directly_issued_by(ca_cert)  # signature and issuer name; raises otherwise
    key = load_key(key_path)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert spki(key.public_key()) == spki(cert.public_key())
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")  # PKCS#8
    assert mode(key_path) == 0o600
    assert cert.version is x509.Version.v3
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    assert ext(cert, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    ca_ski = ext(ca_cert, x509.SubjectKeyIdentifier).value
    assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == ca_ski.digest
    assert cert.not_valid_before_utc <= ca_cert.not_valid_after_utc
    return cert


@pytest.fixture
def ca(tmp_path: Path) -> pki.CertificateAuthority:
    return pki.ensure_ca(tmp_path / "pki")


@pytest.fixture
def server_pair(ca: pki.CertificateAuthority) -> tuple[Path, Path]:
    return pki.issue_cert(ca=ca, name="apiserver", cn="kube-apiserver", sans_ip=SERVER_IPS, sans_dns=SERVER_DNS, server=True)


@pytest.fixture
def client_pair(ca: pki.CertificateAuthority) -> tuple[Path, Path]:
    return pki.issue_cert(ca=ca, name="node-a", cn="system:node:node-a", orgs=["system:nodes", "extra"], client=True)


# --------------------------------------------------------------------------- CA


def test_ca_is_a_self_signed_ca_with_cert_sign(tmp_path: Path) -> None:
    ca = pki.ensure_ca(tmp_path / "etcd", cn="test-etcd-ca")
    assert (ca.directory, ca.cert, ca.key) == (tmp_path / "etcd", tmp_path / "etcd/ca.crt", tmp_path / "etcd/ca.key")
    cert = load_cert(ca.cert)
    cert.verify_directly_issued_by(cert)
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "test-etcd-ca"
    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and ku.value.digital_signature
    assert ext(cert, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    assert spki(load_key(ca.key).public_key()) == spki(cert.public_key())
    assert mode(ca.key) == 0o600
    assert ca.key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert ca.cert.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----\n")
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 3650
    assert 0 < cert.serial_number < 2**159  # positive, at most 20 octets (RFC 5280)


def test_ca_is_reused(ca: pki.CertificateAuthority) -> None:
    before = (ca.cert.read_bytes(), ca.key.read_bytes(), ca.fingerprint())
    again = pki.ensure_ca(ca.directory)
    assert again == ca
    assert (ca.cert.read_bytes(), ca.key.read_bytes(), ca.fingerprint()) == before


def test_ca_with_a_key_that_is_not_its_own_is_regenerated(ca: pki.CertificateAuthority) -> None:
    ca.key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    old = ca.fingerprint()
    pki.ensure_ca(ca.directory)
    assert ca.fingerprint() != old
    assert spki(load_key(ca.key).public_key()) == spki(load_cert(ca.cert).public_key())
    assert mode(ca.key) == 0o600


# --------------------------------------------------------------------------- leaf certificates


def test_server_cert_verifies_and_has_the_sans_and_eku(ca: pki.CertificateAuthority, server_pair) -> None:
    cert_path, key_path = server_pair
    assert (cert_path, key_path) == (ca.directory / "apiserver.crt", ca.directory / "apiserver.key")
    cert = assert_leaf_signed_by(cert_path, key_path, ca)
    assert eku(cert) == {ExtendedKeyUsageOID.SERVER_AUTH}
    ips, dns = sans(cert)
    assert ips == set(SERVER_IPS) and dns == set(SERVER_DNS)
    assert cert.subject.rfc4514_string() == "CN=kube-apiserver"
    # Full path validation (chain, validity, serverAuth, name match) by cryptography's verifier.
    verify = PolicyBuilder().store(Store([load_cert(ca.cert)]))
    for name in [*(x509.DNSName(d) for d in SERVER_DNS), *(x509.IPAddress(ipaddress.ip_address(i)) for i in SERVER_IPS)]:
        chain = verify.build_server_verifier(name).verify(cert, [])
        assert chain[-1] == load_cert(ca.cert)
    with pytest.raises(VerificationError):
        verify.build_server_verifier(x509.DNSName("not-in-the-cert")).verify(cert, [])


def test_client_cert_carries_user_and_groups(ca: pki.CertificateAuthority, client_pair) -> None:
    cert = assert_leaf_signed_by(*client_pair, ca)
    assert eku(cert) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    # One RDN per attribute, O before CN: the API server takes CN as the user, each O as a group.
    assert [(a.oid, a.value) for a in cert.subject] == [
        (NameOID.ORGANIZATION_NAME, "system:nodes"),
        (NameOID.ORGANIZATION_NAME, "extra"),
        (NameOID.COMMON_NAME, "system:node:node-a"),
    ]
    assert all(len(rdn) == 1 for rdn in cert.subject.rdns)
    with pytest.raises(x509.ExtensionNotFound):
        ext(cert, x509.SubjectAlternativeName)  # none asked for, none written


def test_client_and_server_cert(ca: pki.CertificateAuthority) -> None:
    cert_path, key_path = pki.issue_cert(
        ca=ca, name="etcd-member", cn="etcd-member", sans_ip=["127.0.0.1"], sans_dns=["localhost"], client=True, server=True
    )
    cert = assert_leaf_signed_by(cert_path, key_path, ca)
    assert eku(cert) == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
    assert sans(cert) == ({"127.0.0.1"}, {"localhost"})


def test_ip_sans_are_normalized(ca: pki.CertificateAuthority) -> None:
    cert_path, _ = pki.issue_cert(ca=ca, name="v6", cn="v6", sans_ip=["0:0:0:0:0:0:0:1", "127.0.0.1"], server=True)
    assert sans(load_cert(cert_path))[0] == {"::1", "127.0.0.1"}
    assert json.loads((ca.directory / "v6.spec.json").read_text())["ips"] == ["::1", "127.0.0.1"]


def test_subdirectory_ca_like_the_control_plane_uses(ca: pki.CertificateAuthority) -> None:
    """ControlPlane.kubeconfig_for/issue_serving_cert: the cluster CA's files, another output directory."""
    identities = pki.CertificateAuthority(directory=ca.directory / "identities", cert=ca.cert, key=ca.key)
    cert_path, key_path = pki.issue_cert(ca=identities, name="alice", cn="alice", orgs=["devs"], client=True)
    assert cert_path.parent == key_path.parent == ca.directory / "identities"
    assert_leaf_signed_by(cert_path, key_path, ca)


# --------------------------------------------------------------------------- reuse and reissue


def test_same_request_reuses_files(ca: pki.CertificateAuthority, server_pair) -> None:
    cert_path, key_path = server_pair
    before = cert_path.read_bytes(), key_path.read_bytes()
    again = pki.issue_cert(ca=ca, name="apiserver", cn="kube-apiserver", sans_ip=SERVER_IPS, sans_dns=SERVER_DNS, server=True)
    assert again == server_pair
    assert (cert_path.read_bytes(), key_path.read_bytes()) == before


def test_changed_request_reissues(ca: pki.CertificateAuthority, server_pair) -> None:
    cert_path, key_path = server_pair
    old_key = key_path.read_bytes()
    pki.issue_cert(ca=ca, name="apiserver", cn="kube-apiserver", sans_ip=["127.0.0.1"], sans_dns=["localhost"], server=True)
    assert key_path.read_bytes() != old_key
    cert = assert_leaf_signed_by(cert_path, key_path, ca)
    assert sans(cert) == ({"127.0.0.1"}, {"localhost"})


def test_regenerated_ca_reissues(ca: pki.CertificateAuthority, server_pair) -> None:
    cert_path, key_path = server_pair
    ca.cert.unlink()
    new_ca = pki.ensure_ca(ca.directory)
    pki.issue_cert(ca=new_ca, name="apiserver", cn="kube-apiserver", sans_ip=SERVER_IPS, sans_dns=SERVER_DNS, server=True)
    assert_leaf_signed_by(cert_path, key_path, new_ca)
    assert json.loads((ca.directory / "apiserver.spec.json").read_text())["ca"] == new_ca.fingerprint()


def test_corrupt_spec_reissues(ca: pki.CertificateAuthority, client_pair) -> None:
    spec = ca.directory / "node-a.spec.json"
    spec.write_text("{not json")
    old = client_pair[0].read_bytes()
    pki.issue_cert(ca=ca, name="node-a", cn="system:node:node-a", orgs=["system:nodes", "extra"], client=True)
    assert client_pair[0].read_bytes() != old
    assert json.loads(spec.read_text())["cn"] == "system:node:node-a"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "../escape", "cn": "x", "client": True},
        {"name": ".hidden", "cn": "x", "client": True},
        {"name": "nousage", "cn": "x"},
        {"name": "badip", "cn": "x", "sans_ip": ["127.0.0.256"], "server": True},
        {"name": "baddns", "cn": "x", "sans_dns": ["bücher.example"], "server": True},
        {"name": "emptycn", "cn": "", "client": True},
        {"name": "longcn", "cn": "x" * 65, "client": True},
    ],
)
def test_bad_requests_raise_before_writing(ca: pki.CertificateAuthority, kwargs) -> None:
    before = sorted(p.name for p in ca.directory.iterdir())
    with pytest.raises(ValueError):
        pki.issue_cert(ca=ca, **kwargs)
    assert sorted(p.name for p in ca.directory.iterdir()) == before


def test_unusable_ca_raises_pki_error(ca: pki.CertificateAuthority) -> None:
    ca.key.write_text("not a key\n")
    with pytest.raises(pki.PkiError):
        pki.issue_cert(ca=ca, name="x", cn="x", client=True)


# --------------------------------------------------------------------------- ServiceAccount keypair


def test_service_account_keypair(tmp_path: Path) -> None:
    pub_path, key_path = pki.ensure_service_account_keypair(tmp_path / "pki")
    assert (pub_path.name, key_path.name) == ("sa.pub", "sa.key")
    assert mode(key_path) == 0o600
    # kube-apiserver: --service-account-signing-key-file takes a PEM private key (PKCS#8 here),
    # --service-account-key-file a PEM "PUBLIC KEY" (PKIX); RSA or ECDSA.
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert pub_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----\n")
    key = load_key(key_path)
    pub = serialization.load_pem_public_key(pub_path.read_bytes())
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert spki(pub) == spki(key.public_key())
    signature = key.sign(b"token", ec.ECDSA(hashes.SHA256()))  # ES256
    pub.verify(signature, b"token", ec.ECDSA(hashes.SHA256()))

    # Reused as is; a lost or wrong public half is rebuilt from the kept private key.
    before = key_path.read_bytes(), pub_path.read_bytes()
    assert pki.ensure_service_account_keypair(tmp_path / "pki") == (pub_path, key_path)
    assert (key_path.read_bytes(), pub_path.read_bytes()) == before
    pub_path.unlink()
    pki.ensure_service_account_keypair(tmp_path / "pki")
    assert (key_path.read_bytes(), pub_path.read_bytes()) == before


# --------------------------------------------------------------------------- independent checks


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl on this machine")
def test_openssl_verify_strict(ca: pki.CertificateAuthority, server_pair, client_pair) -> None:
    def verify(purpose: str, cert: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["openssl", "verify", "-x509_strict", "-purpose", purpose, "-CAfile", str(ca.cert), str(cert)],
            capture_output=True,
            text=True,
            check=False,
        )

    for purpose, cert in (("sslserver", server_pair[0]), ("sslclient", client_pair[0])):
        proc = verify(purpose, cert)
        assert proc.returncode == 0 and proc.stdout.strip() == f"{cert}: OK", proc.stdout + proc.stderr
    # The EKUs restrict the certificates: a serving certificate is no client certificate.
    assert verify("sslclient", server_pair[0]).returncode != 0
    assert verify("sslserver", client_pair[0]).returncode != 0
    other = pki.ensure_ca(ca.directory / "other")
    proc = subprocess.run(
        ["openssl", "verify", "-CAfile", str(other.cert), str(server_pair[0])], capture_output=True, text=True, check=False
    )
    assert proc.returncode != 0


@pytest.mark.parametrize("server_name", ["kubernetes.default.svc.cluster.local", "10.96.0.1", "::1"])
def test_python_ssl_mutual_tls_handshake(ca: pki.CertificateAuthority, server_pair, client_pair, server_name) -> None:
    """What localcluster/node/server.py and the Python clients do with these files."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca.cert))
    server_ctx.load_cert_chain(*map(str, server_pair))
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.create_default_context(cafile=str(ca.cert))
    client_ctx.load_cert_chain(*map(str, client_pair))
    if hasattr(ssl, "VERIFY_X509_STRICT"):  # Python 3.13's default; set it on older versions too
        client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT
        server_ctx.verify_flags |= ssl.VERIFY_X509_STRICT

    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_name)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for side, obj in (("client", client), ("server", server)):
            if not done[side]:
                try:
                    obj.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    assert all(done.values())
    peer = server.getpeercert()
    assert ((("organizationName", "system:nodes"),) in peer["subject"]) and (
        (("commonName", "system:node:node-a"),) in peer["subject"]
    )


_GO_CHECK = r"""
package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
)

func fail(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...); os.Exit(1) }

func block(path, want string) []byte {
	data, err := os.ReadFile(path)
	if err != nil { fail("%v", err) }
	b, _ := pem.Decode(data)
	if b == nil || b.Type != want { fail("%s: want a %q PEM block", path, want) }
	return b.Bytes
}

// Each stdin line: "leaf <ca> <cert> <key> server|client <name or ->" or "sa <pub> <key>".
func main() {
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch f[0] {
		case "leaf":
			pair, err := tls.LoadX509KeyPair(f[2], f[3])
			if err != nil { fail("%s: %v", f[2], err) }
			leaf, err := x509.ParseCertificate(pair.Certificate[0])
			if err != nil { fail("%v", err) }
			roots := x509.NewCertPool()
			caPEM, _ := os.ReadFile(f[1])
			if !roots.AppendCertsFromPEM(caPEM) { fail("%s: no CA", f[1]) }
			usage := x509.ExtKeyUsageServerAuth
			if f[4] == "client" { usage = x509.ExtKeyUsageClientAuth }
			opts := x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}}
			if f[5] != "-" { opts.DNSName = f[5] }
			if _, err := leaf.Verify(opts); err != nil { fail("%s: %v", f[2], err) }
			// The API server's x509 authenticator: user = CommonName, groups = Organization.
			fmt.Printf("ok %s %s cn=%s o=%s\n", f[2], f[4], leaf.Subject.CommonName, strings.Join(leaf.Subject.Organization, ","))
		case "sa":
			pub, err := x509.ParsePKIXPublicKey(block(f[1], "PUBLIC KEY"))
			if err != nil { fail("%v", err) }
			key, err := x509.ParsePKCS8PrivateKey(block(f[2], "PRIVATE KEY"))
			if err != nil { fail("%v", err) }
			priv, ok := key.(*ecdsa.PrivateKey)
			if !ok { fail("sa.key is %T, not ECDSA", key) }
			digest := sha256.Sum256([]byte("token"))
			sig, err := ecdsa.SignASN1(rand.Reader, priv, digest[:])
			if err != nil { fail("%v", err) }
			if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), digest[:], sig) { fail("sa.pub does not verify sa.key") }
			fmt.Println("ok sa")
		default:
			fail("bad line %q", sc.Text())
		}
	}
}
"""


@pytest.mark.skipif(shutil.which("go") is None, reason="no Go toolchain on this machine")
def test_go_crypto_x509_accepts_the_files(tmp_path: Path, ca: pki.CertificateAuthority, server_pair, client_pair) -> None:
    """What kube-apiserver, etcd and kubectl do: tls.LoadX509KeyPair, Certificate.Verify with EKUs, PKCS#8/PKIX keys."""
    src = tmp_path / "gocheck" / "main.go"
    src.parent.mkdir()
    src.write_text(_GO_CHECK)
    exe = tmp_path / "gocheck" / "gocheck"
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-buildvcs=false", "CGO_ENABLED": "0"}
    build = subprocess.run(
        ["go", "build", "-o", str(exe), str(src)], capture_output=True, text=True, check=False, env=env, timeout=300
    )
    if build.returncode != 0:
        pytest.skip(f"go build failed (toolchain problem, not pki): {build.stderr[-500:]}")
    sa_pub, sa_key = pki.ensure_service_account_keypair(ca.directory)
    lines = [f"leaf {ca.cert} {server_pair[0]} {server_pair[1]} server {d}" for d in SERVER_DNS]
    lines.append(f"leaf {ca.cert} {client_pair[0]} {client_pair[1]} client -")
    lines.append(f"sa {sa_pub} {sa_key}")
    proc = subprocess.run([str(exe)], input="\n".join(lines) + "\n", capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("ok ") == len(lines)
    assert f"ok {client_pair[0]} client cn=system:node:node-a o=system:nodes,extra\n" in proc.stdout
    # And Go rejects the wrong usage: a serving certificate is not a client certificate.
    wrong = subprocess.run(
        [str(exe)],
        input=f"leaf {ca.cert} {server_pair[0]} {server_pair[1]} client -\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert wrong.returncode != 0 and "incompatible key usage" in wrong.stderr
