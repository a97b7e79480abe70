"""The agent's serving certificate: asked of the cluster, and swapped for a new one before it expires."""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509

from agentapi import certificates
from node_agent.servingcert import CertificateRequestFailed, ServingCertificate


class FakeCertificatesApi:
    """The CSR API as the agent sees it: create, then read until the signer has answered."""

    def __init__(self, *, ca: certificates.KeyPair, seconds: int, deny: str | None = None) -> None:
        self.ca, self.seconds, self.deny = ca, seconds, deny
        self.created: list[Any] = []

    async def create_certificate_signing_request(self, body: Any) -> Any:
        self.created.append(body)
        return body

    async def read_certificate_signing_request(self, name: str) -> Any:
        body = next(b for b in self.created if b.metadata.name == name)
        request = base64.b64decode(body.spec.request)
        status: dict[str, Any] = {"conditions": None, "certificate": None}
        if self.deny:
            status["conditions"] = [
                type("C", (), {"type": "Denied", "status": "True", "reason": "NotAnAgent", "message": self.deny})
            ]
        else:
            cert = certificates.sign_request(ca=self.ca, request_pem=request, seconds=self.seconds)
            status["certificate"] = base64.b64encode(cert).decode()
        return type("CSR", (), {"status": type("S", (), status)})


class FakeCoreApi:
    async def read_node(self, name: str) -> dict[str, Any]:
        return {"metadata": {"name": name}, "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}]}}


def _serving(tmp_path: Path, api: FakeCertificatesApi) -> ServingCertificate:
    return ServingCertificate(
        certs=api, core=FakeCoreApi(), node_name="node-1", directory=tmp_path / "tls", seconds=api.seconds, poll_s=0.01
    )  # type: ignore[arg-type]


def _peer_serial(port: int, ca: certificates.KeyPair) -> int:
    context = ssl.create_default_context(cadata=ca.cert_pem.decode())
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


async def test_the_certificate_is_renewed_and_served_without_a_restart(tmp_path: Path) -> None:
    ca = certificates.new_ca()
    api = FakeCertificatesApi(ca=ca, seconds=3)  # renewed 2 s in
    serving = _serving(tmp_path, api)
    context = await serving.context()
    assert (serving.key_file.stat().st_mode & 0o777) == 0o600
    spec = api.created[0].spec
    assert spec.signer_name == certificates.SIGNER_NAME and spec.usages == list(certificates.AGENT_USAGES)
    runner = web.AppRunner(web.Application())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    keeper = asyncio.create_task(serving.keep(context))
    try:
        first = await asyncio.to_thread(_peer_serial, port, ca)
        await asyncio.sleep(2.6)
        second = await asyncio.to_thread(_peer_serial, port, ca)
        assert len(api.created) == 2, "asked again at two thirds of the lifetime"
        assert first != second, "new connections get the new certificate, from the same server"
    finally:
        keeper.cancel()
        await runner.cleanup()


async def test_a_denied_request_is_an_error_that_says_why(tmp_path: Path) -> None:
    api = FakeCertificatesApi(ca=certificates.new_ca(), seconds=600, deny="an agent on node-1 may ask for 127.0.0.1 only")
    with pytest.raises(CertificateRequestFailed, match="Denied: NotAnAgent an agent on node-1 may ask"):
        await _serving(tmp_path, api).obtain()
