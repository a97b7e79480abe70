"""The kustomize overlay that installs podmigrate's own manifests on the local cluster.

``kubectl apply -k <state>/podmigrate/overlay`` is the whole install: the overlay takes
``manifests/`` as its base and changes only what differs between this one-host cluster and a
real one. Each change says why, because each is a difference between what the tests prove and
what users run:

* **image**: podmigrate's image as ``make image`` pushed it to the local registry, by digest.
* **ConfigMap**: the checkpoint repository in the local registry; the OTLP endpoint of the run.
* **API server address** (``KUBERNETES_SERVICE_HOST``/``PORT`` in both pods): there is no
  kube-proxy here, so the ``kubernetes`` Service's virtual IP leads nowhere; in-cluster
  configuration is pointed at the API server's own loopback address instead.
* **controller on the host network, webhook on a shared loopback address**: the cluster may use
  loopback and link-local addresses only, and EndpointSlices refuse both (``may not be in the
  loopback range``), so no Service can route to a pod. Every controller replica therefore also
  listens on one loopback address (:func:`webhook_address`, ``SO_REUSEPORT``) the way a
  Service's virtual IP would spread connections, and the webhook configurations call that
  address by URL; the certificate names it.
* **node directories**: every node of this cluster shares one host filesystem, so a node's
  kubelet directory is ``<state>/nodes/<node>/kubelet``, not ``/var/lib/kubelet``. The agent
  mounts the nodes' directory once and is told its own node's paths with ``$(NODE_NAME)``; the
  base's fixed hostPaths would point every agent at the same, wrong, host directories.
* **plain-HTTP registry**: the local registry speaks HTTP on loopback.
* **registry credentials**: the two ``kubernetes.io/dockerconfigjson`` Secrets an operator creates
  (docs/registry.md), from the users ``localcluster up`` generated (``registryauth``):
  ``podmigrate-registry`` (push, pull, delete; the agents mount it) and
  ``podmigrate-checkpoint-pull`` (pull only; the controller copies it for restored pods). The
  agent's command, replaced as a whole here, keeps the base's ``--registry-credentials``.
* **encryption keys**: the ConfigMap ``podmigrate-encryption`` the base mounts holds the public
  key of the keypair ``localcluster up`` made (``nodesetup.make_encryption_keys``); each node's
  private key is in its own ``keys`` directory under the nodes' directory, not at the base's
  hostPath ``/etc/podmigrate/keys`` (one host, several nodes).
* **lease of 6 s**: one host, no clock skew, so tests wait less for a standby to take over.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Final

import yaml

from localcluster import nodesetup, registryauth

REPO: Final = Path(__file__).resolve().parent.parent
MANIFESTS: Final = REPO / "manifests"
BASE_IMAGE: Final = "ghcr.io/podmigrate/podmigrate"
NAMESPACE: Final = "podmigrate-system"
AGENT_PORT: Final = 10260
WEBHOOK_PORT: Final = 9443
LEASE_SECONDS: Final = 6
AGENT_REGISTRY_CREDENTIALS: Final = "/etc/podmigrate/registry/.dockerconfigjson"  # the base mounts the Secret there
ENCRYPTION_CONFIGMAP: Final = "podmigrate-encryption"  # manifests/deploy/agent.yaml mounts it
# The base's host directories that have no meaning on a host shared by several nodes (agent.yaml).
_NODE_HOST_PATHS: Final = {
    "checkpoints": "/var/lib/kubelet/checkpoints",
    "dump-hook": "/run/podmigrate/stop-after-dump",
    "kubelet-pods": "/var/lib/kubelet/pods",
    "agent-state": "/var/lib/podmigrate",
    "decryption-keys": "/etc/podmigrate/keys",
}


def webhook_address(*, instance: int) -> str:
    """The loopback address every controller replica of cluster ``instance`` serves the webhook on."""
    return f"127.0.{1 + instance}.240"


def _api_env(api_port: int) -> list[dict[str, str]]:
    return [
        {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
        {"name": "KUBERNETES_SERVICE_PORT", "value": str(api_port)},
    ]


def _telemetry_env(otlp_endpoint: str | None) -> list[dict[str, str]]:
    return [{"name": "OTEL_BSP_SCHEDULE_DELAY", "value": "200"}] if otlp_endpoint else []


def _controller_patch(*, api_port: int, instance: int, otlp_endpoint: str | None, client_ca: bool) -> dict[str, Any]:
    command = [
        "podmigrate-controller", "--checkpoint-repository", "$(CHECKPOINT_REPOSITORY)", "--agent-port", str(AGENT_PORT),
        "--webhook-address", f"{webhook_address(instance=instance)}:{WEBHOOK_PORT}", "--health-address", "$(POD_IP):8080",
        "--lease-seconds", str(LEASE_SECONDS), "--agent-token-file", "/var/run/secrets/podmigrate.io/agent/token",
        *(["--webhook-client-ca", "/etc/podmigrate/webhook-client/ca.crt"] if client_ca else ["--webhook-allow-any-client"]),
    ]  # fmt: skip
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "podmigrate-controller", "namespace": NAMESPACE},
        "spec": {
            "template": {
                "spec": {
                    "hostNetwork": True,
                    "dnsPolicy": "ClusterFirstWithHostNet",
                    "containers": [
                        {"name": "controller", "command": command, "env": [*_api_env(api_port), *_telemetry_env(otlp_endpoint)]}
                    ],
                }
            }
        },
    }


def _agent_patch(*, registry: str, api_port: int, nodes_dir: Path, otlp_endpoint: str | None) -> dict[str, Any]:
    node_state = nodes_dir / "$(NODE_NAME)"
    command = [
        "podmigrate-agent", "--node-name", "$(NODE_NAME)", "--listen", f"$(NODE_IP):{AGENT_PORT}",
        "--cert-dir", "/run/podmigrate/tls", "--plain-http-registry", registry, *nodesetup.agent_args(node_state),
        "--registry-credentials", AGENT_REGISTRY_CREDENTIALS,
    ]  # fmt: skip
    mounts: list[dict[str, Any]] = [{"mountPath": path, "$patch": "delete"} for path in _NODE_HOST_PATHS.values()]
    mounts.append({"name": "nodes", "mountPath": str(nodes_dir), "mountPropagation": "HostToContainer"})
    volumes: list[dict[str, Any]] = [{"name": name, "$patch": "delete"} for name in _NODE_HOST_PATHS]
    volumes.append({"name": "nodes", "hostPath": {"path": str(nodes_dir), "type": "Directory"}})
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "podmigrate-agent", "namespace": NAMESPACE},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "agent",
                            "command": command,
                            "env": [*_api_env(api_port), *_telemetry_env(otlp_endpoint)],
                            "volumeMounts": mounts,
                        }
                    ],
                    "volumes": volumes,
                }
            }
        },
    }


def _webhook_patches(*, instance: int) -> list[dict[str, Any]]:
    base = f"https://{webhook_address(instance=instance)}:{WEBHOOK_PORT}"
    patches = []
    for kind, name, paths in (
        ("MutatingWebhookConfiguration", "podmigrate", ["/mutate-pods"]),
        ("ValidatingWebhookConfiguration", "podmigrate-evictions", ["/intercept-evictions"]),
        (
            "ValidatingWebhookConfiguration",
            "podmigrate-guard",
            ["/validate-pods", "/validate-podmigrations", "/validate-nodedrains", "/validate-checkpoints"],
        ),
    ):
        ops = [
            {"op": "replace", "path": f"/webhooks/{i}/clientConfig", "value": {"url": base + path}}
            for i, path in enumerate(paths)
        ]
        target = {"group": "admissionregistration.k8s.io", "version": "v1", "kind": kind, "name": name}
        patches.append({"target": target, "patch": json.dumps(ops)})
    return patches


def _write_encryption_keys(directory: Path, *, nodes_dir: Path) -> str:
    """The ConfigMap of the nodes' public key (what an operator creates: docs/encryption.md); its file name."""
    public = nodesetup.encryption_public_key(nodes_dir.parent)
    if not public.exists():
        raise FileNotFoundError(
            f"no node encryption key at {public}: this cluster was brought up before checkpoint images were encrypted; "
            "run `localcluster down` and `up` again"
        )
    doc = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": ENCRYPTION_CONFIGMAP, "namespace": NAMESPACE},
        "data": {public.name: public.read_text()},
    }
    (directory / "encryption.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return "encryption.yaml"


def write(
    directory: Path,
    *,
    image: str,
    registry: str,
    api_port: int,
    instance: int,
    nodes_dir: Path,
    otlp_endpoint: str | None,
    webhook_client_ca: Path | None,
    registry_auth: Path | None = None,
) -> Path:
    """Write the overlay into ``directory`` and return it; ``image`` is ``<registry>/<repo>@sha256:...``.

    ``webhook_client_ca`` is the CA of the API server's admission client certificate (None: a
    control plane started before it had one; the webhooks then answer any client).
    ``registry_auth`` is the registry token server's directory (``Cluster.registry_auth``): the
    registry Secrets are made from its users (None: a registry without authentication).
    """
    directory.mkdir(parents=True, exist_ok=True)
    name, _, digest = image.partition("@")
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "podmigrate-config", "namespace": NAMESPACE},
        "data": {
            "CHECKPOINT_REPOSITORY": f"{registry}/podmigrate-checkpoints",
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint or "",
        },
    }
    client_ca = webhook_client_ca is not None and webhook_client_ca.exists()
    files: dict[str, Any] = {
        "config.yaml": config,
        "controller.yaml": _controller_patch(
            api_port=api_port, instance=instance, otlp_endpoint=otlp_endpoint, client_ca=client_ca
        ),
        "agent.yaml": _agent_patch(registry=registry, api_port=api_port, nodes_dir=nodes_dir, otlp_endpoint=otlp_endpoint),
    }
    resources = [os.path.relpath(MANIFESTS, directory), _write_encryption_keys(directory, nodes_dir=nodes_dir)]
    if client_ca:
        assert webhook_client_ca is not None
        ca_map = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "podmigrate-webhook-client-ca", "namespace": NAMESPACE},
            "data": {"ca.crt": webhook_client_ca.read_text()},
        }
        (directory / "webhook-client-ca.yaml").write_text(yaml.safe_dump(ca_map, sort_keys=False))
        resources.append("webhook-client-ca.yaml")
    if registry_auth is not None:
        secrets = registryauth.secret_manifests(paths=registryauth.Paths(directory=registry_auth), namespace=NAMESPACE)
        (directory / "registry-secrets.yaml").write_text(yaml.safe_dump_all(secrets, sort_keys=False))
        (directory / "registry-secrets.yaml").chmod(0o600)
        resources.append("registry-secrets.yaml")
    for file, doc in files.items():
        (directory / file).write_text(yaml.safe_dump(doc, sort_keys=False))
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources,
        "images": [{"name": BASE_IMAGE, "newName": name, "digest": digest}],
        "patches": [*({"path": file} for file in files), *_webhook_patches(instance=instance)],
    }
    header = "# Written by localcluster (localcluster/overlay.py says why each patch exists).\n"
    (directory / "kustomization.yaml").write_text(header + yaml.safe_dump(kustomization, sort_keys=False))
    return directory
