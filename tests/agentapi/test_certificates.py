"""What the control service grants an agent: a certificate for its own node's address, nothing else."""

from __future__ import annotations

import datetime as dt
import ssl

import pytest
from cryptography import x509

from agentapi import certificates as c

NS = "podmigrate-system"
AGENT = f"system:serviceaccount:{NS}:podmigrate-agent"
NODES = {"node-1": "127.0.1.1"}
EXTRA = {c.EXTRA_NODE_NAME: ["node-1"], c.EXTRA_POD_NAME: ["podmigrate-agent-x7k2p"]}


def _request(*, node: str = "node-1", ip: str = "127.0.1.1") -> bytes:
    return c.agent_csr(key=c.new_key(), node_name=node, node_ip=ip)


def _refusal(request: bytes, **over: object) -> str | None:
    args: dict = dict(request_pem=request, username=AGENT, extra=EXTRA, usages=list(c.AGENT_USAGES), namespace=NS, node_ips=NODES)
    args.update(over)
    return c.refusal(**args)


def test_the_agent_of_a_node_may_have_that_nodes_address() -> None:
    assert _refusal(_request()) is None


@pytest.mark.parametrize(
    ("over", "why"),
    [
        ({"username": "system:serviceaccount:default:default"}, "only system:serviceaccount:podmigrate-system:podmigrate-agent"),
        ({"username": "system:serviceaccount:other:podmigrate-agent"}, "only system:serviceaccount:podmigrate-system"),
        ({"extra": {}}, "not bound to a pod on a node"),
        ({"extra": {c.EXTRA_NODE_NAME: ["node-1", "node-2"]}}, "not bound to a pod on a node"),
        ({"extra": {c.EXTRA_NODE_NAME: ["node-9"]}}, "node 'node-9' has no InternalIP"),
        ({"usages": ["digital signature", "server auth", "client auth"]}, "usages ['client auth'] are not allowed"),
        ({"usages": ["digital signature"]}, "'server auth'"),
    ],
)
def test_requests_from_anyone_else_or_for_more_are_refused(over: dict, why: str) -> None:
    assert why in (_refusal(_request(), **over) or "")


def test_an_agent_cannot_ask_for_another_nodes_address() -> None:
    assert "may ask for 127.0.1.1 only" in (_refusal(_request(ip="127.0.1.2")) or "")
    assert "CN=podmigrate-agent:node-1" in (_refusal(_request(node="node-2")) or "")


def test_a_request_that_is_not_a_csr_is_refused() -> None:
    assert "not a PEM certificate request" in (
        _refusal(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n") or ""
    )


def test_the_signed_certificate_serves_its_node_address_only(tmp_path) -> None:
    ca = c.new_ca()
    key = c.new_key()
    cert = c.sign_request(ca=ca, request_pem=c.agent_csr(key=key, node_name="node-1", node_ip="127.0.1.1"), seconds=3600)
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    parsed = x509.load_pem_x509_certificate(cert)
    assert c.ip_addresses(cert) == ["127.0.1.1"]
    usage = parsed.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert [u._name for u in usage] == ["serverAuth"]
    assert not parsed.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = parsed.not_valid_after_utc - parsed.not_valid_before_utc
    assert dt.timedelta(seconds=3600) < lifetime <= dt.timedelta(seconds=3600 + 301)
    # Python's own verification (what the control service does when it calls the agent).
    context = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert parsed.issuer == ca.certificate.subject


def test_renewal_is_due_at_two_thirds_of_the_lifetime() -> None:
    ca = c.new_ca()
    pair = c.issue(ca=ca, common_name="x", dns_names=["x.ns.svc"], seconds=3000)
    start = pair.certificate.not_valid_before_utc + dt.timedelta(minutes=5)
    assert abs((c.renew_at(pair.cert_pem) - start).total_seconds() - 2000) < 2
