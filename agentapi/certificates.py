"""The agents' and the webhook's serving certificates: issued in the cluster, never a shared key.

Why: the control service sends migrations' orders to ``https://<node InternalIP>:10260`` and must
know it talks to *that* node's agent; the API server must know it talks to the control service's
webhook. A certificate valid for every node would let one compromised node impersonate all the
others, so each agent holds a key it generated itself and a certificate for its own node's
address only.

How (the CertificateSigningRequest API, the way kubelets get theirs):

1. The agent generates a P-256 key and asks for a certificate with a CSR object whose
   ``signerName`` is :data:`SIGNER_NAME`, with its node's InternalIP as the only subject
   alternative name (:func:`agent_csr`).
2. The API server records *who* asked: the agent's projected ServiceAccount token is bound to
   its pod, so ``spec.username`` is the agent's ServiceAccount and ``spec.extra`` names the pod
   and the node it runs on (:data:`EXTRA_NODE_NAME`, :data:`EXTRA_POD_NAME`). Nobody can forge
   those: they come from the token, not from the request body.
3. The control service is the approver and the signer of that signer name
   (``migrator/certificates.py``). It grants a request only if :func:`refusal` finds nothing
   wrong: the requester is the agent's ServiceAccount, from a pod on node N, and asks for N's
   InternalIP and nothing else. It signs with the podmigrate CA kept in the Secret
   :data:`CA_SECRET`, and trusts exactly that CA when it calls agents.
4. Certificates are short-lived (:data:`AGENT_CERT_SECONDS`); the agent asks again once two
   thirds of the lifetime have passed (:func:`renew_at`) and swaps the new one in without a
   restart.

The webhook's certificate comes from the same CA (:func:`issue`), for the webhook Service's DNS
name; the control service puts the CA in the webhook configurations' ``caBundle`` itself.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SIGNER_NAME: Final = "podmigrate.io/agent-serving"
CA_SECRET: Final = "podmigrate-ca"  # kubernetes.io/tls, in the control service's namespace
AGENT_SERVICE_ACCOUNT: Final = "podmigrate-agent"
WEBHOOK_SERVICE: Final = "podmigrate-webhook"
# Set by the API server from a pod-bound ServiceAccount token (KEP-4193), copied into a CSR's spec.extra.
EXTRA_NODE_NAME: Final = "authentication.kubernetes.io/node-name"
EXTRA_POD_NAME: Final = "authentication.kubernetes.io/pod-name"
AGENT_CERT_SECONDS: Final = 7 * 24 * 3600
WEBHOOK_CERT_SECONDS: Final = 30 * 24 * 3600
CA_SECONDS: Final = 10 * 365 * 24 * 3600
# Usages an agent may ask for (the names of the CertificateSigningRequest API).
AGENT_USAGES: Final = ("digital signature", "server auth")
_ALLOWED_USAGES: Final = frozenset({"digital signature", "key encipherment", "server auth"})
# Clocks of nodes and control plane differ a little: a certificate is valid from a few minutes back.
_BACKDATE: Final = dt.timedelta(minutes=5)


class CertificateError(ValueError):
    """A PEM that is not what it claims, or a request that cannot be signed."""


@dataclass(frozen=True, kw_only=True)
class KeyPair:
    """A certificate and its key, PEM."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def agent_common_name(node_name: str) -> str:
    return f"podmigrate-agent:{node_name}"


def webhook_dns_names(namespace: str) -> list[str]:
    """The names the API server checks when it calls the webhook Service."""
    return [f"{WEBHOOK_SERVICE}.{namespace}.svc", f"{WEBHOOK_SERVICE}.{namespace}.svc.cluster.local"]


def agent_csr(*, key: ec.EllipticCurvePrivateKey, node_name: str, node_ip: str) -> bytes:
    """A PKCS#10 request for the agent of ``node_name``, valid for its InternalIP only."""
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, agent_common_name(node_name))]))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(node_ip))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM)


def _one(extra: Mapping[str, Sequence[str]] | None, key: str) -> str | None:
    values = list((extra or {}).get(key) or [])
    return values[0] if len(values) == 1 else None


def requesting_node(extra: Mapping[str, Sequence[str]] | None) -> str | None:
    """The node the requester's pod-bound token names, if it names exactly one."""
    return _one(extra, EXTRA_NODE_NAME)


def requesting_pod(extra: Mapping[str, Sequence[str]] | None) -> str | None:
    return _one(extra, EXTRA_POD_NAME)


def refusal(
    *,
    request_pem: bytes,
    username: str,
    extra: Mapping[str, Sequence[str]] | None,
    usages: Sequence[str],
    namespace: str,
    node_ips: Mapping[str, str],
) -> str | None:
    """Why an agent certificate request must be denied, or None to grant it.

    ``node_ips`` maps node names to their InternalIP. The request must come from the agent's
    ServiceAccount in ``namespace`` through a token bound to a pod on a node, and ask for exactly
    that node's address, with serving usages only.
    """
    expected_user = f"system:serviceaccount:{namespace}:{AGENT_SERVICE_ACCOUNT}"
    if username != expected_user:
        return f"requested by {username!r}: only {expected_user} may ask for {SIGNER_NAME} certificates"
    node = requesting_node(extra)
    if node is None:
        return "the requester's token is not bound to a pod on a node (no node name in the request's extra info)"
    if node not in node_ips:
        return f"node {node!r} has no InternalIP"
    if extra_usages := sorted(set(usages) - _ALLOWED_USAGES):
        return f"usages {extra_usages} are not allowed (serving usages only)"
    if "server auth" not in usages:
        return "the request does not ask for the 'server auth' usage"
    try:
        csr = x509.load_pem_x509_csr(request_pem)
    except ValueError as exc:
        return f"spec.request is not a PEM certificate request: {exc}"
    if not csr.is_signature_valid:
        return "the request's signature is not valid"
    key = csr.public_key()
    if not (isinstance(key, ec.EllipticCurvePublicKey) or (isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048)):
        return "the key must be ECDSA or RSA of 2048 bits or more"
    cn = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if cn != [agent_common_name(node)]:
        return f"the subject must be CN={agent_common_name(node)}, not {csr.subject.rfc4514_string()!r}"
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "the request names no address"
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    others = [n for n in san if not isinstance(n, x509.IPAddress)]
    if others or ips != [node_ips[node]]:
        return f"an agent on {node} may ask for {node_ips[node]} only, not {[*ips, *(str(o.value) for o in others)]}"
    return None


def _validity(seconds: int, now: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime]:
    now = now or dt.datetime.now(dt.UTC)
    return now - _BACKDATE, now + dt.timedelta(seconds=seconds)


def _ski(public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(public_key)


def new_ca(*, common_name: str = "podmigrate-ca") -> KeyPair:
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    not_before, not_after = _validity(CA_SECONDS)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(ca=True), critical=True)
        .add_extension(_ski(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert_pem=cert.public_bytes(serialization.Encoding.PEM), key_pem=key_pem(key))


def _ca_parts(ca: KeyPair) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError("the CA key is not an ECDSA key")
    return ca.certificate, key


def key_usage(*, ca: bool) -> x509.KeyUsage:
    """digitalSignature, plus keyCertSign and cRLSign for a CA.

    ECDSA keys only sign: keyEncipherment is an RSA-only usage, and Go's TLS stack
    does not need it for ECDHE key exchange. (The local cluster's CA uses the same: localcluster/pki.py.)
    """
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf(
    *,
    ca: KeyPair,
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    san: list[x509.GeneralName],
    seconds: int,
) -> bytes:
    ca_cert, ca_key = _ca_parts(ca)
    not_before, not_after = _validity(seconds)
    not_after = min(not_after, ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(_ski(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def sign_request(*, ca: KeyPair, request_pem: bytes, seconds: int = AGENT_CERT_SECONDS) -> bytes:
    """The certificate for a request :func:`refusal` accepted: its subject and addresses, serving only."""
    csr = x509.load_pem_x509_csr(request_pem)
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise CertificateError("unsupported key type")
    san = list(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    return _leaf(ca=ca, subject=csr.subject, public_key=public_key, san=san, seconds=seconds)


def issue(*, ca: KeyPair, common_name: str, dns_names: Sequence[str] = (), ips: Sequence[str] = (), seconds: int) -> KeyPair:
    """A serving certificate and a fresh key, signed by ``ca`` (the webhook's)."""
    key = new_key()
    san: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    san += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert_pem = _leaf(ca=ca, subject=subject, public_key=key.public_key(), san=san, seconds=seconds)
    return KeyPair(cert_pem=cert_pem, key_pem=key_pem(key))


def renew_at(cert_pem: bytes) -> dt.datetime:
    """When a certificate should be replaced: two thirds into its lifetime."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    start, end = cert.not_valid_before_utc + _BACKDATE, cert.not_valid_after_utc
    return start + (end - start) * 2 / 3


def ip_addresses(cert_pem: bytes) -> list[str]:
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
