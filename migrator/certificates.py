"""The control service as the cluster's authority for podmigrate's serving certificates.

Why here: the control service is the only client of the agents and the only server of the
webhooks, so the CA it trusts and the CA that signs can be the same key, kept in one Secret of
its own namespace (:data:`agentapi.certificates.CA_SECRET`) and created by whichever replica
starts first. Nothing outside the cluster has to issue or distribute certificates, and no key
is shared between nodes. What a request must satisfy is in ``agentapi/certificates.py``.

* :func:`ensure_ca`: read the CA Secret, or create it (a replica that loses the race reads the
  winner's: creation is the lock).
* :class:`AgentSigner`: approver and signer of ``podmigrate.io/agent-serving`` requests, level
  triggered on a watch of those requests only (a field selector on ``spec.signerName``).
  Approving and signing are separate steps recorded in the request's status, so a replica that
  takes over finishes what another began. Denials say why, in the request's condition.
* :class:`WebhookCertificate`: this replica's webhook serving certificate (a fresh key in
  memory, renewed at two thirds of its life) and the CA in both webhook configurations'
  ``caBundle``, patched when it differs.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import ssl
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from kubernetes_asyncio import client

from agentapi import certificates
from agentapi.client import AgentError, node_address
from kubeclient.reading import plain, read_or_none, read_plain
from kubeclient.watching import list_and_watch
from migrator import webhookconfig

log = logging.getLogger(__name__)

APPROVER: Final = "podmigrate-controller"


async def ensure_ca(*, core: client.CoreV1Api, namespace: str) -> certificates.KeyPair:
    """The podmigrate CA from its Secret, created on first use."""
    for _ in range(3):
        secret = await read_or_none(core.read_namespaced_secret(certificates.CA_SECRET, namespace))
        if secret is not None:
            data = secret.data or {}
            return certificates.KeyPair(cert_pem=base64.b64decode(data["tls.crt"]), key_pem=base64.b64decode(data["tls.key"]))
        ca = certificates.new_ca()
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(
                name=certificates.CA_SECRET, namespace=namespace, labels={"app.kubernetes.io/name": "podmigrate"}
            ),
            type="kubernetes.io/tls",
            data={"tls.crt": base64.b64encode(ca.cert_pem).decode(), "tls.key": base64.b64encode(ca.key_pem).decode()},
        )
        try:
            await core.create_namespaced_secret(namespace, body)
            log.info("created the podmigrate CA (Secret %s/%s)", namespace, certificates.CA_SECRET)
            return ca
        except client.ApiException as exc:
            if exc.status != 409:  # another replica created it first: read theirs
                raise
    raise RuntimeError(f"Secret {namespace}/{certificates.CA_SECRET} could neither be read nor created")


def client_context(ca: certificates.KeyPair) -> ssl.SSLContext:
    """How the control service calls agents: only certificates of this CA, checked against the node's address."""
    return ssl.create_default_context(cadata=ca.cert_pem.decode())


def _condition(csr: dict[str, Any], kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in (csr.get("status") or {}).get("conditions") or [])


class AgentSigner:
    """Approves or denies, then signs, the agents' certificate requests."""

    def __init__(
        self, *, certs: client.CertificatesV1Api, core: client.CoreV1Api, ca: certificates.KeyPair, namespace: str
    ) -> None:
        self._certs = certs
        self._core = core
        self._ca = ca
        self._namespace = namespace

    async def run(self) -> None:
        async for event in list_and_watch(
            self._certs.list_certificate_signing_request, field_selector=f"spec.signerName={certificates.SIGNER_NAME}"
        ):
            if event.type in ("SYNC", "ADDED", "MODIFIED"):
                try:
                    await self.reconcile(plain(event.object))
                except client.ApiException as exc:
                    # 409: an event older than our own approval or signature (the newer one follows); 404: withdrawn.
                    if exc.status not in (404, 409):
                        log.warning("certificate request %s: %s", event.object.metadata.name, exc.reason)

    async def _node_ips(self, node: str | None) -> dict[str, str]:
        if node is None:
            return {}
        obj = await read_plain(self._core.read_node(node))
        try:
            return {node: node_address(obj)} if obj else {}
        except AgentError:
            return {}

    async def reconcile(self, csr: dict[str, Any]) -> None:
        spec, name = csr["spec"], csr["metadata"]["name"]
        if spec.get("signerName") != certificates.SIGNER_NAME or _condition(csr, "Denied") or _condition(csr, "Failed"):
            return
        if (csr.get("status") or {}).get("certificate"):
            return
        request_pem = base64.b64decode(spec["request"])
        if not _condition(csr, "Approved"):
            extra = spec.get("extra") or {}
            why = certificates.refusal(
                request_pem=request_pem, username=spec.get("username", ""), extra=extra, usages=spec.get("usages") or [],
                namespace=self._namespace, node_ips=await self._node_ips(certificates.requesting_node(extra)),
            )  # fmt: skip
            await self._decide(csr, approved=why is None, message=why or "an agent's certificate for its own node")
            if why is not None:
                log.warning("denied certificate request %s: %s", name, why)
                return
            csr = plain(await self._certs.read_certificate_signing_request(name))
        seconds = min(int(spec.get("expirationSeconds") or certificates.AGENT_CERT_SECONDS), certificates.AGENT_CERT_SECONDS)
        cert = certificates.sign_request(ca=self._ca, request_pem=request_pem, seconds=max(seconds, 600))
        csr.setdefault("status", {})["certificate"] = base64.b64encode(cert).decode()
        await self._certs.replace_certificate_signing_request_status(name, csr)
        log.info("signed certificate request %s for %s", name, certificates.ip_addresses(cert))

    async def _decide(self, csr: dict[str, Any], *, approved: bool, message: str) -> None:
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        condition = {
            "type": "Approved" if approved else "Denied",
            "status": "True",
            "reason": "AgentOfThisNode" if approved else "NotAnAgentOfThisNode",
            "message": message,
            "lastUpdateTime": now,
            "lastTransitionTime": now,
        }
        status = csr.setdefault("status", {})
        status["conditions"] = [*(status.get("conditions") or []), condition]
        await self._certs.replace_certificate_signing_request_approval(csr["metadata"]["name"], csr)


class WebhookCertificate:
    """This replica's webhook serving certificate, and the CA the API server must trust for it."""

    def __init__(self, *, api: client.ApiClient, ca: certificates.KeyPair, namespace: str, ips: Sequence[str] = ()) -> None:
        self._admission = client.AdmissionregistrationV1Api(api)
        self._ca = ca
        self._ips = list(ips)
        self._namespace = namespace
        self._dir = Path(tempfile.mkdtemp(prefix="podmigrate-webhook-"))
        self.current: certificates.KeyPair | None = None

    def _issue(self) -> certificates.KeyPair:
        pair = certificates.issue(
            ca=self._ca, common_name=f"{certificates.WEBHOOK_SERVICE}.{self._namespace}.svc",
            dns_names=certificates.webhook_dns_names(self._namespace), ips=self._ips, seconds=certificates.WEBHOOK_CERT_SECONDS,
        )  # fmt: skip
        key, cert = self._dir / "tls.key", self._dir / "tls.crt"
        key.touch(mode=0o600)
        key.write_bytes(pair.key_pem)
        cert.write_bytes(pair.cert_pem)
        self.current = pair
        return pair

    def context(self) -> ssl.SSLContext:
        self._issue()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self._dir / "tls.crt", self._dir / "tls.key")
        return context

    async def publish_ca(self) -> None:
        """Put the CA into the webhooks' caBundle where it is not there yet (a JSON patch per webhook)."""
        bundle = base64.b64encode(self._ca.cert_pem).decode()
        for read, patch, name in webhookconfig.configurations(self._admission):
            config = await read_plain(read(name))
            if config is None:
                log.warning("webhook configuration %s does not exist: nothing to trust the webhook with", name)
                continue
            ops = [
                {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": bundle}
                for i, hook in enumerate(config.get("webhooks") or [])
                if (hook.get("clientConfig") or {}).get("caBundle") != bundle
            ]
            if ops:
                await patch(name, ops)
                log.info("webhook configuration %s now trusts the podmigrate CA", name)

    async def keep(self, context: ssl.SSLContext, *, every_s: float = 60.0) -> None:
        """Renew at two thirds of the lifetime; put the CA back should a re-applied manifest have dropped it."""
        while True:
            await asyncio.sleep(every_s)
            assert self.current is not None
            if dt.datetime.now(dt.UTC) >= certificates.renew_at(self.current.cert_pem):
                self._issue()
                context.load_cert_chain(self._dir / "tls.crt", self._dir / "tls.key")
                log.info("webhook serving certificate renewed")
            try:
                await self.publish_ca()
            except client.ApiException as exc:
                log.warning("checking the webhooks' caBundle: %s", exc.reason)
