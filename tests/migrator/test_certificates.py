"""The control service as approver and signer of the agents' certificate requests."""

from __future__ import annotations

import base64
import copy
from typing import Any

from agentapi import certificates
from migrator.certificates import AgentSigner

NS = "podmigrate-system"


class FakeCsrApi:
    def __init__(self, csr: dict[str, Any]) -> None:
        self.csr = csr
        self.calls: list[str] = []

    async def replace_certificate_signing_request_approval(self, name: str, body: dict[str, Any]) -> None:
        self.calls.append("approval")
        self.csr = copy.deepcopy(body)

    async def replace_certificate_signing_request_status(self, name: str, body: dict[str, Any]) -> None:
        self.calls.append("status")
        self.csr = copy.deepcopy(body)

    async def read_certificate_signing_request(self, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.csr)


class FakeCore:
    async def read_node(self, name: str) -> dict[str, Any]:
        return {"metadata": {"name": name}, "status": {"addresses": [{"type": "InternalIP", "address": "127.0.1.1"}]}}


def _csr(*, username: str, node: str | None, ip: str = "127.0.1.1") -> dict[str, Any]:
    request = certificates.agent_csr(key=certificates.new_key(), node_name="node-1", node_ip=ip)
    return {
        "metadata": {"name": "pm-1"},
        "spec": {
            "request": base64.b64encode(request).decode(), "signerName": certificates.SIGNER_NAME,
            "usages": list(certificates.AGENT_USAGES), "username": username,
            "extra": {certificates.EXTRA_NODE_NAME: [node]} if node else {},
        },
    }  # fmt: skip


def _signer(api: FakeCsrApi, ca: certificates.KeyPair) -> AgentSigner:
    return AgentSigner(certs=api, core=FakeCore(), ca=ca, namespace=NS)  # type: ignore[arg-type]


async def test_the_agent_of_a_node_is_approved_then_signed() -> None:
    ca = certificates.new_ca()
    api = FakeCsrApi(_csr(username=f"system:serviceaccount:{NS}:podmigrate-agent", node="node-1"))
    await _signer(api, ca).reconcile(copy.deepcopy(api.csr))
    assert api.calls == ["approval", "status"]
    (approved,) = api.csr["status"]["conditions"]
    assert (approved["type"], approved["reason"]) == ("Approved", "AgentOfThisNode")
    cert = base64.b64decode(api.csr["status"]["certificate"])
    assert certificates.ip_addresses(cert) == ["127.0.1.1"]
    # Level-triggered: shown the finished request again, it does nothing.
    await _signer(api, ca).reconcile(copy.deepcopy(api.csr))
    assert api.calls == ["approval", "status"]


async def test_anyone_else_is_denied_with_the_reason_and_never_signed() -> None:
    api = FakeCsrApi(_csr(username="system:serviceaccount:default:default", node="node-1"))
    await _signer(api, certificates.new_ca()).reconcile(copy.deepcopy(api.csr))
    assert api.calls == ["approval"]
    (denied,) = api.csr["status"]["conditions"]
    assert denied["type"] == "Denied" and "only system:serviceaccount:podmigrate-system:podmigrate-agent" in denied["message"]
    assert not api.csr["status"].get("certificate")
    await _signer(api, certificates.new_ca()).reconcile(copy.deepcopy(api.csr))
    assert api.calls == ["approval"], "a denied request stays denied"


async def test_another_nodes_address_is_denied() -> None:
    api = FakeCsrApi(_csr(username=f"system:serviceaccount:{NS}:podmigrate-agent", node="node-1", ip="127.0.1.2"))
    await _signer(api, certificates.new_ca()).reconcile(copy.deepcopy(api.csr))
    (denied,) = api.csr["status"]["conditions"]
    assert denied["type"] == "Denied" and "may ask for 127.0.1.1 only" in denied["message"]
