"""Start and stop a real Kubernetes control plane on loopback, for the local cluster.

Why a real one: the migrator's correctness depends on real API-server behaviour —
RBAC and the Node authorizer, the NodeRestriction and webhook admission plugins,
ServiceAccount tokens, the ReplicaSet and garbage-collector controllers, the
scheduler. Fakes drift from upstream; running upstream's own binaries (built by
``k8s-binaries/build.sh`` at the release pinned in its go.mod) does not.

How it is laid out (everything under ``state_dir``):

* ``pki/``            cluster CA, ServiceAccount keypair and component certificates
  ``pki/etcd/``       a *separate* CA for etcd: etcd trusts every client certificate its
                      CA signs, so sharing the cluster CA would let any node certificate
                      read etcd directly (kubeadm separates them for the same reason)
  ``pki/front-proxy/`` the aggregation layer's request-header CA, separate for the same
                      reason: whoever holds one of its certificates may assert any user
  ``pki/identities/`` client certificates minted by :meth:`ControlPlane.kubeconfig_for`
  ``pki/serving/``    serving certificates minted by :meth:`ControlPlane.issue_serving_cert`
* ``etcd/``           etcd's data; reused on the next start (a restart keeps objects)
* ``kubeconfigs/``    one self-contained kubeconfig per identity (certificates embedded)
* ``logs/<name>.log`` each process's stdout and stderr, appended across runs
* ``pids/<name>.pid`` so a different process (``python -m localcluster.controlplane down``)
                      can stop what this one started
* ``controlplane.json`` what :meth:`ControlPlane.load` needs to reattach

Every listener binds 127.0.0.1 and speaks TLS with client-certificate authentication.
The processes run in their own session, so a Ctrl-C aimed at the caller does not
kill them half-way; :meth:`ControlPlane.stop` (or ``down``) stops them by PID,
and only after checking ``/proc/<pid>/cmdline`` still names our binary and state dir.

Network rule of this project: nothing may use 10/8, 172.16/12 or 192.168/16, not
even as a configured range. See :data:`SERVICE_CIDR` for the service range chosen.
There is no kube-proxy and no CNI: Service cluster IPs are allocated but route nowhere.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any, Final

from localcluster import pki, processes

__all__ = [
    "BINARIES",
    "COMPONENTS",
    "SERVICE_CIDR",
    "ControlPlane",
    "ControlPlaneError",
    "ensure_binaries",
    "start",
    "stop_state_dir",
]

BUILD_SCRIPT: Final = Path(__file__).resolve().parent / "k8s-binaries" / "build.sh"

# Start order; stop() goes in reverse, so the controllers and the API server never
# outlive what they talk to (and the scheduler can release its leader lease).
COMPONENTS: Final = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
BINARIES: Final = (*COMPONENTS, "kubectl")

# The Service cluster IP range. The API server insists on one, and the usual
# defaults (10.96.0.0/12, 10.0.0.0/24) break the network rule. Tried against
# kube-apiserver v1.36.3:
#   169.254.240.0/24 (link-local) -> accepted: the API server starts, the
#                     `kubernetes` Service gets 169.254.240.1, the ServiceCIDR
#                     object `kubernetes` is created and Ready.
# Link-local is a good fit: it is never forwarded by routers, it is not one of the
# forbidden private ranges, and with no kube-proxy nothing answers on it anyway.
# (192.0.2.0/24 would also be outside the forbidden ranges but is this VM's own
# eth0 network, so it is deliberately not used.)
SERVICE_CIDR: Final = "169.254.240.0/24"

_FORBIDDEN_NETS: Final = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_ISSUER: Final = "https://kubernetes.default.svc.cluster.local"
# The API server's client certificate for admission webhooks, from a CA of its own (``_admission_config``).
WEBHOOK_CLIENT_CA_DIR: Final = "webhook-client"
WEBHOOK_CLIENT_CN: Final = "kube-apiserver-webhook-client"
_LOG_TAIL_LINES: Final = 40


class ControlPlaneError(processes.ProcessError):
    """The control plane failed to build, start, become ready or stop."""


# --------------------------------------------------------------------------- binaries


def ensure_binaries() -> Path:
    """Return the bin dir holding the five binaries, building them first if missing.

    A first build takes minutes on two cores (``k8s-binaries/build.sh``, cached by version).
    """
    try:
        return processes.cached_build(script=BUILD_SCRIPT, binaries=BINARIES)
    except processes.ProcessError as exc:
        raise ControlPlaneError(str(exc)) from None


# --------------------------------------------------------------------------- helpers


def _check_network_rule(*, what: str, value: str) -> None:
    """Refuse an address or range that overlaps the forbidden private networks."""
    net = ipaddress.ip_network(value, strict=False)
    for bad in _FORBIDDEN_NETS:
        if net.version == bad.version and net.overlaps(bad):  # type: ignore[arg-type]
            raise ValueError(f"{what} {value} overlaps {bad}: forbidden by the network rule")


def _port_free(port: int) -> bool:
    # SO_REUSEADDR as Go's listeners set it, so TIME_WAIT leftovers don't count as busy.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _write_kubeconfig(*, path: Path, server: str, ca_cert: Path, user: str, cert: Path, key: Path) -> Path:
    """A self-contained kubeconfig (JSON, which every YAML loader accepts), mode 0600."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "podmigrate-local",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": _b64(ca_cert),
                },
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(cert),
                    "client-key-data": _b64(key),
                },
            }
        ],
        "contexts": [{"name": user, "context": {"cluster": "podmigrate-local", "user": user}}],
        "current-context": user,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f, indent=2)
    tmp.replace(path)
    return path


class _Api:
    """Just enough of an HTTPS client for readiness checks, stdlib only."""

    def __init__(self, *, server: str, ca_cert: Path, cert: Path, key: Path) -> None:
        ctx = ssl.create_default_context(cafile=str(ca_cert))
        ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
        self._server = server
        # An empty ProxyHandler: urllib would otherwise send loopback traffic to
        # $https_proxy when no_proxy doesn't list 127.0.0.1.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx))

    def request(self, *, path: str, method: str = "GET", body: Mapping[str, Any] | None = None) -> tuple[int, bytes]:
        """Return ``(status, body)``; connection errors are status 0."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self._server + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(req, timeout=5) as resp:
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()
        except (urllib.error.URLError, OSError):
            return 0, b""


# --------------------------------------------------------------------------- processes


def stop_state_dir(*, state_dir: Path, timeout: float = 15.0) -> list[str]:
    """Stop the control plane recorded under ``state_dir``; return the names stopped.

    Works from any process: reads ``pids/*.pid`` and only signals PIDs that
    :func:`processes.is_ours` confirms. Controllers go first, then the API server, then etcd.
    """
    return _stop(state_dir=state_dir.resolve(), children={}, timeout=timeout)


def _stop(*, state_dir: Path, children: Mapping[str, subprocess.Popen[bytes]], timeout: float) -> list[str]:
    stopped: list[str] = []
    groups = (("kube-scheduler", "kube-controller-manager"), ("kube-apiserver",), ("etcd",))
    for group in groups:
        pids: dict[str, int] = {}
        for name in group:
            pid_file = processes.pid_file(state_dir=state_dir, name=name)
            try:
                pid = int(pid_file.read_text().strip())
            except (OSError, ValueError):
                if name not in children:
                    continue
                pid = children[name].pid
            if processes.is_ours(pid=pid, name=name, state_dir=state_dir) or name in children:
                pids[name] = pid
                stopped.append(name)
        processes.terminate(pids=pids, state_dir=state_dir, children=children, timeout=timeout)
        for name in group:
            processes.pid_file(state_dir=state_dir, name=name).unlink(missing_ok=True)
    return stopped


# --------------------------------------------------------------------------- control plane


@dataclass
class ControlPlane:
    """A running control plane: where it is, how to reach it, and how to stop it."""

    state_dir: Path
    bin_dir: Path
    server: str
    ca_cert: Path
    kubeconfig: Path
    service_cidr: str
    ports: dict[str, int]
    pids: dict[str, int]
    _children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def _ca(self) -> pki.CertificateAuthority:
        pki_dir = self.state_dir / "pki"
        return pki.CertificateAuthority(directory=pki_dir, cert=pki_dir / "ca.crt", key=pki_dir / "ca.key")

    @property
    def webhook_client_ca(self) -> Path:
        """The CA certificate of the client certificate the API server presents to admission webhooks."""
        return self.state_dir / "pki" / WEBHOOK_CLIENT_CA_DIR / "ca.crt"

    def kubeconfig_for(self, *, user: str, cn: str, orgs: Sequence[str] = ()) -> Path:
        """Mint (or reuse) a client-certificate kubeconfig for identity ``cn``/``orgs``.

        ``user`` names the files (``kubeconfigs/<user>.kubeconfig``). A node uses
        ``cn="system:node:<name>", orgs=["system:nodes"]`` so that the Node
        authorizer and NodeRestriction treat it as that node.
        """
        ca = self._ca
        identities = pki.CertificateAuthority(directory=ca.directory / "identities", cert=ca.cert, key=ca.key)
        identities.directory.mkdir(parents=True, exist_ok=True)
        cert, key = pki.issue_cert(ca=identities, name=user, cn=cn, orgs=orgs, client=True)
        return _write_kubeconfig(
            path=self.state_dir / "kubeconfigs" / f"{user}.kubeconfig",
            server=self.server,
            ca_cert=self.ca_cert,
            user=user,
            cert=cert,
            key=key,
        )

    def issue_serving_cert(self, *, name: str, ips: Sequence[str], dns: Sequence[str] = ()) -> tuple[Path, Path]:
        """Issue (or reuse) a serving certificate signed by the cluster CA.

        For node HTTPS servers (the kubelet API stand-in): the API server verifies
        them with ``--kubelet-certificate-authority`` = this CA, by the node's
        InternalIP, so ``ips`` must contain the address the Node object reports.
        """
        for ip in ips:
            _check_network_rule(what="serving certificate IP", value=ip)
        ca = self._ca
        serving = pki.CertificateAuthority(directory=ca.directory / "serving", cert=ca.cert, key=ca.key)
        serving.directory.mkdir(parents=True, exist_ok=True)
        return pki.issue_cert(ca=serving, name=name, cn=name, sans_ip=ips, sans_dns=dns, server=True)

    def kubectl(
        self, *args: str, kubeconfig: Path | None = None, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the matching kubectl against this cluster (admin unless ``kubeconfig``); ``input`` is its stdin."""
        return subprocess.run(
            [str(self.bin_dir / "kubectl"), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=check,
        )

    def stop(self, *, timeout: float = 15.0) -> None:
        """Stop every process (SIGTERM, then SIGKILL after ``timeout``); idempotent."""
        _stop(state_dir=self.state_dir, children=self._children, timeout=timeout)
        self._children.clear()
        self.pids.clear()

    def save(self) -> None:
        data = {
            "state_dir": str(self.state_dir),
            "bin_dir": str(self.bin_dir),
            "server": self.server,
            "ca_cert": str(self.ca_cert),
            "kubeconfig": str(self.kubeconfig),
            "service_cidr": self.service_cidr,
            "ports": self.ports,
            "pids": self.pids,
        }
        path = self.state_dir / "controlplane.json"
        tmp = path.with_name(".controlplane.json.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, *, state_dir: Path) -> ControlPlane:
        """Reattach to a control plane started by another process (PIDs may be stale)."""
        state_dir = state_dir.resolve()
        data = json.loads((state_dir / "controlplane.json").read_text())
        return cls(
            state_dir=state_dir,
            bin_dir=Path(data["bin_dir"]),
            server=data["server"],
            ca_cert=Path(data["ca_cert"]),
            kubeconfig=Path(data["kubeconfig"]),
            service_cidr=data["service_cidr"],
            ports={k: int(v) for k, v in data["ports"].items()},
            pids={k: int(v) for k, v in data["pids"].items()},
        )


# --------------------------------------------------------------------------- start


@dataclass(frozen=True, slots=True)
class _Pki:
    ca: pki.CertificateAuthority
    etcd_ca: pki.CertificateAuthority
    front_proxy_ca: pki.CertificateAuthority
    webhook_client_ca: pki.CertificateAuthority
    sa_pub: Path
    sa_key: Path
    certs: dict[str, tuple[Path, Path]]


def _ensure_pki(*, state_dir: Path, service_cidr: str) -> _Pki:
    pki_dir = state_dir / "pki"
    ca = pki.ensure_ca(pki_dir)
    etcd_ca = pki.ensure_ca(pki_dir / "etcd", cn="podmigrate-localcluster-etcd-ca")
    # Without a request-header CA the controller manager and scheduler log "missing
    # content for CA bundle ... requestheader-client-ca-file" over and over, and
    # aggregated API servers could not authenticate the API server's proxied calls.
    front_proxy_ca = pki.ensure_ca(pki_dir / "front-proxy", cn="podmigrate-localcluster-front-proxy-ca")
    # Its own CA, trusted by admission webhooks only: a certificate from the cluster CA (a kubelet's, an
    # admin's) must not pass for the API server calling a webhook (admission_config).
    webhook_client_ca = pki.ensure_ca(pki_dir / WEBHOOK_CLIENT_CA_DIR, cn="podmigrate-localcluster-webhook-client-ca")
    sa_pub, sa_key = pki.ensure_service_account_keypair(pki_dir)
    # The `kubernetes` Service gets the range's first address; in-cluster clients
    # verify the API server's certificate against it.
    first_service_ip = str(next(ipaddress.ip_network(service_cidr).hosts()))
    loopback = ["127.0.0.1"]
    certs = {
        "etcd": pki.issue_cert(  # serving and peer (single member: peers never connect)
            ca=etcd_ca, name="etcd-member", cn="etcd-member",
            sans_ip=loopback, sans_dns=["localhost"], client=True, server=True,
        ),
        "apiserver-etcd-client": pki.issue_cert(
            ca=etcd_ca, name="apiserver-etcd-client", cn="kube-apiserver-etcd-client",
            client=True,
        ),
        "apiserver": pki.issue_cert(
            ca=ca, name="apiserver", cn="kube-apiserver",
            sans_ip=[*loopback, first_service_ip],
            sans_dns=[
                "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            server=True,
        ),
        "front-proxy-client": pki.issue_cert(
            ca=front_proxy_ca, name="front-proxy-client", cn="front-proxy-client",
            client=True,
        ),
        "apiserver-kubelet-client": pki.issue_cert(
            ca=ca, name="apiserver-kubelet-client", cn="kube-apiserver-kubelet-client",
            client=True,
        ),
        "apiserver-webhook-client": pki.issue_cert(
            ca=webhook_client_ca, name="apiserver-webhook-client", cn=WEBHOOK_CLIENT_CN, client=True,
        ),
        "admin": pki.issue_cert(
            ca=ca, name="admin", cn="podmigrate-admin", orgs=["system:masters"], client=True,
        ),
        "kube-controller-manager": pki.issue_cert(
            ca=ca, name="kube-controller-manager", cn="system:kube-controller-manager",
            client=True,
        ),
        "kube-controller-manager-serving": pki.issue_cert(
            ca=ca, name="kube-controller-manager-serving", cn="kube-controller-manager",
            sans_ip=loopback, sans_dns=["localhost"], server=True,
        ),
        "kube-scheduler": pki.issue_cert(
            ca=ca, name="kube-scheduler", cn="system:kube-scheduler", client=True,
        ),
        "kube-scheduler-serving": pki.issue_cert(
            ca=ca, name="kube-scheduler-serving", cn="kube-scheduler",
            sans_ip=loopback, sans_dns=["localhost"], server=True,
        ),
    }  # fmt: skip
    return _Pki(
        ca=ca, etcd_ca=etcd_ca, front_proxy_ca=front_proxy_ca, webhook_client_ca=webhook_client_ca,
        sa_pub=sa_pub, sa_key=sa_key, certs=certs,
    )  # fmt: skip


def _admission_config(*, state_dir: Path, p: _Pki) -> Path:
    """The API server's ``--admission-control-config-file``: it presents a client certificate to webhooks.

    Admission webhooks are plain HTTPS servers; without this, anything that can reach one can post a
    forged AdmissionReview. The API server's ``WebhookAdmission`` configuration names a kubeconfig
    whose users are webhook hosts; ``*`` (every webhook) serves here, where the only webhooks are
    podmigrate's. A real cluster names the webhook's host (SECURITY.md, "Webhook callers").
    """
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "users": [
            {
                "name": "*",
                "user": {
                    "client-certificate": str(p.certs["apiserver-webhook-client"][0]),
                    "client-key": str(p.certs["apiserver-webhook-client"][1]),
                },
            }
        ],
    }
    webhook_kubeconfig = state_dir / "kubeconfigs" / "admission-webhooks.kubeconfig"
    webhook_kubeconfig.write_text(json.dumps(kubeconfig, indent=2))
    webhook_kubeconfig.chmod(0o600)
    plugins = [
        {
            "name": plugin,
            "configuration": {
                "apiVersion": "apiserver.config.k8s.io/v1",
                "kind": "WebhookAdmissionConfiguration",
                "kubeConfigFile": str(webhook_kubeconfig),
            },
        }
        for plugin in ("ValidatingAdmissionWebhook", "MutatingAdmissionWebhook")
    ]
    config = {"apiVersion": "apiserver.config.k8s.io/v1", "kind": "AdmissionConfiguration", "plugins": plugins}
    path = state_dir / "admission-config.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def _choose_ports(*, state_dir: Path, api_port: int) -> dict[str, int]:
    """Ports for the listeners; reuse last run's if still free (etcd records its peer URL)."""
    if not _port_free(api_port):
        raise ControlPlaneError(f"127.0.0.1:{api_port} is already in use; pick another api_port")
    previous: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError, KeyError):
        previous = json.loads((state_dir / "controlplane.json").read_text())["ports"]
    ports = {"kube-apiserver": api_port}
    for name in ("etcd-client", "etcd-peer", "kube-controller-manager", "kube-scheduler"):
        port = int(previous.get(name, 0))
        while not port or port in ports.values() or not _port_free(port):
            port = _free_port()
        ports[name] = port
    return ports


def _argv(
    *, name: str, bin_dir: Path, state_dir: Path, p: _Pki, ports: Mapping[str, int],
    service_cidr: str, kubeconfigs: Mapping[str, Path],
) -> list[str]:  # fmt: skip
    c = p.certs
    etcd_url = f"https://127.0.0.1:{ports['etcd-client']}"
    peer_url = f"https://127.0.0.1:{ports['etcd-peer']}"
    if name == "etcd":
        return [
            str(bin_dir / "etcd"),
            "--name=podmigrate",
            f"--data-dir={state_dir / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=podmigrate={peer_url}",
            "--initial-cluster-state=new",
            f"--cert-file={c['etcd'][0]}",
            f"--key-file={c['etcd'][1]}",
            "--client-cert-auth=true",
            f"--trusted-ca-file={p.etcd_ca.cert}",
            f"--peer-cert-file={c['etcd'][0]}",
            f"--peer-key-file={c['etcd'][1]}",
            "--peer-client-cert-auth=true",
            f"--peer-trusted-ca-file={p.etcd_ca.cert}",
        ]
    if name == "kube-apiserver":
        return [
            str(bin_dir / "kube-apiserver"),
            "--advertise-address=127.0.0.1",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['kube-apiserver']}",
            f"--etcd-servers={etcd_url}",
            f"--etcd-cafile={p.etcd_ca.cert}",
            f"--etcd-certfile={c['apiserver-etcd-client'][0]}",
            f"--etcd-keyfile={c['apiserver-etcd-client'][1]}",
            f"--tls-cert-file={c['apiserver'][0]}",
            f"--tls-private-key-file={c['apiserver'][1]}",
            f"--client-ca-file={p.ca.cert}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",  # on top of the default set
            f"--admission-control-config-file={_admission_config(state_dir=state_dir, p=p)}",
            "--allow-privileged=true",
            f"--service-cluster-ip-range={service_cidr}",
            f"--service-account-issuer={_ISSUER}",
            f"--service-account-key-file={p.sa_pub}",
            f"--service-account-signing-key-file={p.sa_key}",
            f"--kubelet-client-certificate={c['apiserver-kubelet-client'][0]}",
            f"--kubelet-client-key={c['apiserver-kubelet-client'][1]}",
            f"--kubelet-certificate-authority={p.ca.cert}",
            "--kubelet-preferred-address-types=InternalIP",
            f"--requestheader-client-ca-file={p.front_proxy_ca.cert}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={c['front-proxy-client'][0]}",
            f"--proxy-client-key-file={c['front-proxy-client'][1]}",
            # Needed: the default "lease" reconciler writes the advertise address
            # into the `kubernetes` Endpoints and fails every 10 s with: Endpoints
            # "kubernetes" is invalid: subsets[0].addresses[0].ip: Invalid value:
            # "127.0.0.1": may not be in the loopback range (127.0.0.0/8, ::1/128)
            "--endpoint-reconciler-type=none",
        ]
    if name in ("kube-controller-manager", "kube-scheduler"):
        kc = kubeconfigs[name]
        serving = c[f"{name}-serving"]
        common = [
            str(bin_dir / name),
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports[name]}",
            f"--tls-cert-file={serving[0]}",
            f"--tls-private-key-file={serving[1]}",
            f"--client-ca-file={p.ca.cert}",
            "--leader-elect=true",
        ]
        if name == "kube-scheduler":
            return common
        return [
            *common,
            "--use-service-account-credentials=true",
            f"--root-ca-file={p.ca.cert}",
            f"--service-account-private-key-file={p.sa_key}",
            "--allocate-node-cidrs=false",
            f"--service-cluster-ip-range={service_cidr}",
            f"--cluster-signing-cert-file={p.ca.cert}",
            f"--cluster-signing-key-file={p.ca.key}",
        ]
    raise ValueError(name)


_LEASES: Final = ("kube-controller-manager", "kube-scheduler")


def _delete_stale_leases(*, api: _Api) -> None:
    """Drop leader leases left by a previous run of this state dir.

    kube-controller-manager v1.36 does not release its lease on exit (that is the
    alpha gate ControllerManagerReleaseLeaderElectionLockOnExit), and after a
    SIGKILL neither component does, so a restart would sit ~15 s leaderless until
    the old lease expired. Safe only because start() has checked that no
    component of this state dir is running.
    """
    for name in _LEASES:
        api.request(
            path=f"/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{name}",
            method="DELETE",
        )


def _lease_acquired_since(*, api: _Api, name: str, since: datetime) -> bool:
    """True if the leader lease ``name`` was acquired after ``since``, i.e. by our process.

    A restart from an existing state dir finds the previous run's lease; until it
    expires (15 s if the old holder died without releasing it) nobody leads, even
    though objects like the default ServiceAccount already exist.
    """
    status, body = api.request(path=f"/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{name}")
    if status != HTTPStatus.OK:
        return False
    spec = json.loads(body).get("spec", {})
    acquired = spec.get("acquireTime")
    return bool(acquired and spec.get("holderIdentity")) and (datetime.fromisoformat(acquired) >= since)


def _running_components(*, state_dir: Path) -> list[str]:
    running = []
    for name in COMPONENTS:
        with contextlib.suppress(OSError, ValueError):
            pid = int(processes.pid_file(state_dir=state_dir, name=name).read_text().strip())
            if processes.is_ours(pid=pid, name=name, state_dir=state_dir):
                running.append(f"{name} (pid {pid})")
    return running


def start(
    *,
    state_dir: Path,
    api_port: int = 6443,
    bin_dir: Path | None = None,
    service_cidr: str = SERVICE_CIDR,
    timeout: float = 180.0,
) -> ControlPlane:
    """Start etcd, kube-apiserver, kube-controller-manager and kube-scheduler; wait until ready.

    Ready means: ``/readyz`` is ok, both controllers hold their leader lease (taken
    after this start), and the ``default`` ServiceAccount exists in ``default``
    (after a restart, where it already existed: re-created by the ServiceAccount
    controller in the ``localcluster-readiness`` namespace).
    An existing ``state_dir`` is reused (certificates, etcd data). On any failure
    the processes started so far are stopped and :class:`ControlPlaneError` says
    which one failed, with the tail of its log.
    """
    ipaddress.ip_network(service_cidr)  # strict: ValueError for host bits or junk
    _check_network_rule(what="service CIDR", value=service_cidr)
    state_dir = state_dir.resolve()
    bin_dir = (bin_dir or ensure_binaries()).resolve()
    for sub in ("pids", "logs", "kubeconfigs"):
        (state_dir / sub).mkdir(parents=True, exist_ok=True)
    running = _running_components(state_dir=state_dir)
    if running:
        raise ControlPlaneError(
            f"a control plane is already running from {state_dir}: {', '.join(running)}; "
            f"stop it first (python -m localcluster.controlplane down --state-dir {state_dir})"
        )

    p = _ensure_pki(state_dir=state_dir, service_cidr=service_cidr)
    ports = _choose_ports(state_dir=state_dir, api_port=api_port)
    server = f"https://127.0.0.1:{api_port}"
    kubeconfigs = {
        name: _write_kubeconfig(
            path=state_dir / "kubeconfigs" / f"{name}.kubeconfig",
            server=server,
            ca_cert=p.ca.cert,
            user=name,
            cert=p.certs[name][0],
            key=p.certs[name][1],
        )
        for name in ("admin", "kube-controller-manager", "kube-scheduler")
    }
    launcher = processes.Launcher(state_dir=state_dir, deadline=time.monotonic() + timeout)
    cp = ControlPlane(
        state_dir=state_dir,
        bin_dir=bin_dir,
        server=server,
        ca_cert=p.ca.cert,
        kubeconfig=kubeconfigs["admin"],
        service_cidr=service_cidr,
        ports=ports,
        pids={},
        _children=launcher.children,
    )

    def argv(name: str) -> list[str]:
        return _argv(
            name=name, bin_dir=bin_dir, state_dir=state_dir, p=p, ports=ports,
            service_cidr=service_cidr, kubeconfigs=kubeconfigs,
        )  # fmt: skip

    admin = _Api(server=server, ca_cert=p.ca.cert, cert=p.certs["admin"][0], key=p.certs["admin"][1])
    etcd = _Api(
        server=f"https://127.0.0.1:{ports['etcd-client']}",
        ca_cert=p.etcd_ca.cert,
        cert=p.certs["apiserver-etcd-client"][0],
        key=p.certs["apiserver-etcd-client"][1],
    )
    try:
        launcher.launch(name="etcd", argv=argv("etcd"))
        # The API server would retry etcd by itself, but a dead etcd is easier to
        # diagnose here than from the API server's retry log.
        launcher.wait(
            name="etcd",
            what="GET /health",
            ready=lambda: etcd.request(path="/health")[0] == HTTPStatus.OK,
            interval=0.05,
        )
        launcher.launch(name="kube-apiserver", argv=argv("kube-apiserver"))
        launcher.wait(
            name="kube-apiserver",
            what="GET /readyz",
            ready=lambda: admin.request(path="/readyz")[0] == HTTPStatus.OK,
        )
        _delete_stale_leases(api=admin)
        restarted = _sa_exists(api=admin, namespace="default")
        since = datetime.now(UTC)
        # The controllers are started only now: they fail hard if the API server
        # does not answer within a few seconds of their start.
        launcher.launch(name="kube-controller-manager", argv=argv("kube-controller-manager"))
        launcher.launch(name="kube-scheduler", argv=argv("kube-scheduler"))
        _bind_kubelet_api_admin(api=admin, launcher=launcher)
        for name in _LEASES:
            launcher.wait(
                name=name,
                what="leader lease acquired",
                ready=lambda n=name: _lease_acquired_since(api=admin, name=n, since=since),
            )
        launcher.wait(
            name="kube-controller-manager",
            what="ServiceAccount default/default",
            ready=lambda: _sa_exists(api=admin, namespace="default"),
        )
        if restarted:
            _probe_controllers(api=admin, launcher=launcher)
    except BaseException:
        # Includes KeyboardInterrupt: never leave a half-started cluster behind.
        cp.stop()
        raise
    cp.pids.update({name: child.pid for name, child in launcher.children.items()})
    cp.save()
    return cp


_READINESS_NAMESPACE: Final = "localcluster-readiness"


def _sa_uid(*, api: _Api, namespace: str) -> str | None:
    """UID of ``<namespace>/default`` ServiceAccount, or None if it doesn't exist."""
    status, body = api.request(path=f"/api/v1/namespaces/{namespace}/serviceaccounts/default")
    return str(json.loads(body)["metadata"]["uid"]) if status == HTTPStatus.OK else None


def _sa_exists(*, api: _Api, namespace: str) -> bool:
    return _sa_uid(api=api, namespace=namespace) is not None


def _probe_controllers(*, api: _Api, launcher: processes.Launcher) -> None:
    """Prove the controllers run: the ServiceAccount controller must (re)create a ``default`` SA.

    After a restart, ``default/default`` already exists, and the controller manager
    holds its lease seconds before its controllers run (it first sets up each
    controller's own ServiceAccount credentials), so neither proves anything. So
    we delete the ``default`` SA of a namespace kept for this purpose only and
    wait for a new one (a different UID). A throwaway namespace per start would
    do too, but would linger as Terminating when the cluster is stopped quickly.
    """
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": _READINESS_NAMESPACE}}
    status, body = api.request(path="/api/v1/namespaces", method="POST", body=ns)
    if status not in (HTTPStatus.CREATED, HTTPStatus.CONFLICT):
        raise launcher.fail(name="kube-apiserver", problem=f"refused the readiness namespace ({status}: {body[:500]!r})")
    old_uid = _sa_uid(api=api, namespace=_READINESS_NAMESPACE)
    if old_uid is not None:
        api.request(path=f"/api/v1/namespaces/{_READINESS_NAMESPACE}/serviceaccounts/default", method="DELETE")
    launcher.wait(
        name="kube-controller-manager",
        what=f"ServiceAccount {_READINESS_NAMESPACE}/default recreated",
        ready=lambda: _sa_uid(api=api, namespace=_READINESS_NAMESPACE) not in (None, old_uid),
    )


def _bind_kubelet_api_admin(*, api: _Api, launcher: processes.Launcher) -> None:
    """Let the API server's kubelet-client identity call kubelets (logs, exec), as kubeadm does."""
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "podmigrate:kube-apiserver-kubelet-client"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "system:kubelet-api-admin",
        },
        "subjects": [
            {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "User",
                "name": "kube-apiserver-kubelet-client",
            }
        ],
    }
    status, body = api.request(path="/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", method="POST", body=binding)
    if status not in (HTTPStatus.CREATED, HTTPStatus.CONFLICT):  # 409: kept from a previous run
        raise launcher.fail(
            name="kube-apiserver",
            problem=f"refused the kubelet-api-admin binding ({status}: {body[:500]!r})",
        )


# --------------------------------------------------------------------------- CLI


@contextlib.contextmanager
def _timed(label: str) -> Iterator[None]:
    t0 = time.monotonic()
    yield
    print(f"{label} in {time.monotonic() - t0:.2f} s", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """``up`` starts and returns (the processes keep running); ``down`` stops them."""
    parser = argparse.ArgumentParser(prog="python -m localcluster.controlplane")
    parser.add_argument("command", choices=("up", "down"))
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--api-port", type=int, default=6443)
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            with _timed("control plane ready"):
                cp = start(state_dir=args.state_dir, api_port=args.api_port)
            print(f"export KUBECONFIG={cp.kubeconfig}")
            print(f"# kubectl: {cp.bin_dir / 'kubectl'}", file=sys.stderr)
        else:
            with _timed("stopped"):
                stopped = stop_state_dir(state_dir=args.state_dir)
            print(f"stopped: {', '.join(stopped) or 'nothing was running'}", file=sys.stderr)
    except ControlPlaneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # start() has already stopped what it started
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
