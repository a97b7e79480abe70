"""The agent's own serving certificate, asked of the cluster and renewed before it expires.

Why: the control service calls ``https://<this node's InternalIP>:10260`` and must be able to
tell this node's agent from any other; so the key is generated here, never leaves the agent's
memory-backed ``/tmp``, and the certificate names this node's address only. The request goes
through the CertificateSigningRequest API; the control service approves and signs it after
checking who asked (``agentapi/certificates.py`` says what is checked, ``migrator/certificates.py``
does it). Renewal is the same request again at two thirds of the lifetime; the new certificate
is loaded into the running server's SSL context, so connections made after it use it and none
is dropped.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import secrets
import ssl
from pathlib import Path
from typing import Final

from kubernetes_asyncio import client

from agentapi import certificates
from agentapi.client import node_address
from kubeclient.reading import read_plain

log = logging.getLogger(__name__)

ISSUE_TIMEOUT_S: Final = 120.0
RETRY_S: Final = 30.0


class CertificateRequestFailed(RuntimeError):
    """The cluster denied the request, or nobody answered it in time."""


def _condition(status: client.V1CertificateSigningRequestStatus | None, *types: str) -> str | None:
    for cond in (status.conditions if status else None) or []:
        if cond.type in types and cond.status == "True":
            return f"{cond.type}: {cond.reason or ''} {cond.message or ''}".strip()
    return None


class ServingCertificate:
    """Obtains, writes and renews this node's agent certificate; :meth:`context` serves with it."""

    def __init__(
        self,
        *,
        certs: client.CertificatesV1Api,
        core: client.CoreV1Api,
        node_name: str,
        directory: Path,
        seconds: int = certificates.AGENT_CERT_SECONDS,
        poll_s: float = 0.5,
    ) -> None:
        self._certs = certs
        self._core = core
        self._node = node_name
        self._dir = directory
        self._seconds = seconds
        self._poll = poll_s
        self.current: certificates.KeyPair | None = None

    @property
    def cert_file(self) -> Path:
        return self._dir / "tls.crt"

    @property
    def key_file(self) -> Path:
        return self._dir / "tls.key"

    async def _node_ip(self) -> str:
        node = await read_plain(self._core.read_node(self._node))
        if node is None:
            raise CertificateRequestFailed(f"node {self._node} does not exist")
        return node_address(node)

    async def obtain(self) -> certificates.KeyPair:
        """Ask for a certificate for this node's InternalIP and wait until it is signed (or denied)."""
        node_ip = await self._node_ip()
        key = certificates.new_key()
        request = certificates.agent_csr(key=key, node_name=self._node, node_ip=node_ip)
        name = f"podmigrate-agent-{self._node}-{secrets.token_hex(4)}"
        body = client.V1CertificateSigningRequest(
            metadata=client.V1ObjectMeta(
                name=name, labels={"app.kubernetes.io/name": "podmigrate", "podmigrate.io/node": self._node}
            ),
            spec=client.V1CertificateSigningRequestSpec(
                request=base64.b64encode(request).decode(),
                signer_name=certificates.SIGNER_NAME,
                usages=list(certificates.AGENT_USAGES),
                expiration_seconds=self._seconds,
            ),
        )
        await self._certs.create_certificate_signing_request(body)
        log.info("asked for a serving certificate for %s (%s) with CertificateSigningRequest %s", self._node, node_ip, name)
        deadline = asyncio.get_running_loop().time() + ISSUE_TIMEOUT_S
        while True:
            csr = await self._certs.read_certificate_signing_request(name)
            if refused := _condition(csr.status, "Denied", "Failed"):
                raise CertificateRequestFailed(f"CertificateSigningRequest {name}: {refused}")
            if csr.status and csr.status.certificate:
                pair = certificates.KeyPair(cert_pem=base64.b64decode(csr.status.certificate), key_pem=certificates.key_pem(key))
                self._write(pair)
                log.info("serving certificate for %s issued, valid until %s", node_ip, pair.certificate.not_valid_after_utc)
                return pair
            if asyncio.get_running_loop().time() > deadline:
                raise CertificateRequestFailed(
                    f"CertificateSigningRequest {name} was not signed within {ISSUE_TIMEOUT_S:.0f}s "
                    f"(is the podmigrate controller running? it signs {certificates.SIGNER_NAME})"
                )
            await asyncio.sleep(self._poll)

    def _write(self, pair: certificates.KeyPair) -> None:
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for path, data in ((self.key_file, pair.key_pem), (self.cert_file, pair.cert_pem)):
            tmp = path.with_suffix(".tmp")
            tmp.touch(mode=0o600)
            tmp.write_bytes(data)
            tmp.replace(path)
        self.current = pair

    async def context(self) -> ssl.SSLContext:
        """A server context with a freshly obtained certificate."""
        if self.current is None:
            await self.obtain()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    async def keep(self, context: ssl.SSLContext) -> None:
        """Renew at two thirds of the lifetime, forever; new connections get the new certificate."""
        while True:
            assert self.current is not None
            wait = (certificates.renew_at(self.current.cert_pem) - dt.datetime.now(dt.UTC)).total_seconds()
            await asyncio.sleep(max(wait, 0))
            try:
                await self.obtain()
            except (CertificateRequestFailed, client.ApiException, OSError) as exc:
                log.warning("renewing the serving certificate failed (%s); trying again in %.0fs", exc, RETRY_S)
                await asyncio.sleep(RETRY_S)
                continue
            context.load_cert_chain(self.cert_file, self.key_file)
            log.info("serving certificate renewed")
