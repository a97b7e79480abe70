"""A hostile pod against the installed podmigrate (SECURITY.md's threat model, played end to end).

The intruder has what any workload has: a ServiceAccount of its own in a namespace of its own,
no RBAC beyond the defaults, and the network position of a pod on this host (every address of
the local cluster is reachable from here, as the node network is from a pod in a real cluster).
Each attack must be refused, and afterwards the victim's pod must be exactly as it was: same
UID, running, never frozen, no migration created for it, its checkpoint images unread.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentapi import contract
from localcluster import cluster as lc
from localcluster import hostile, overlay, registryauth
from ocicheckpoint.credentials import Credentials
from tests.conftest import Kube, Podmigrate, wait_for
from tests.localcluster.node.test_checkpoint_restore import CHECKPOINT_ROLE, kubelet_checkpoint
from tests.migrator.workloads import counter_pod, migration

pytestmark = pytest.mark.cluster

INTRUDER = "intruder"


def _insecure() -> ssl.SSLContext:
    """The attacker does not care whom it talks to."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _call(
    url: str,
    *,
    method: str = "POST",
    body: Any = None,
    token: str | None = None,
    context: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, str]:
    """(status, body); status 0 with the error when the connection itself is refused (a TLS handshake)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, method=method, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context or _insecure())
    )
    try:
        with opener.open(request, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)


# The archive attacks played on a node (all are unit-tested in tests/localcluster/node/test_hostile_archives.py).
NODE_ATTACKS = (hostile.Attack.DELETED_TRAVERSAL, hostile.Attack.DIFF_ABSOLUTE_SYMLINK, hostile.Attack.DIFF_DEVICE,
                hostile.Attack.DIFF_OVERSIZED)  # fmt: skip


@pytest.fixture
def genuine_archive(kube: Kube, cluster: lc.Cluster, intruder: str) -> Iterator[Path]:
    """A real kubelet checkpoint of a pod of the intruder's own (what an attacker starts a forgery from)."""
    kube.apply(CHECKPOINT_ROLE)
    kube.run("create", "serviceaccount", "checkpointer", "-n", intruder)
    kube.run("create", "clusterrolebinding", f"{intruder}-checkpointer", "--clusterrole=test-node-checkpoint",
             f"--serviceaccount={intruder}:checkpointer")  # fmt: skip
    node = cluster.nodes[0]
    kube.apply(counter_pod(intruder, node.name, cluster.images["counter"], name="mine"))
    wait_for("its own counter", lambda: len(kube.logs("mine", intruder).split()) >= 2)
    archive = kubelet_checkpoint(
        cluster=cluster,
        node=node,
        namespace=intruder,
        pod="mine",
        container="counter",
        token=kube.token("checkpointer", intruder),
    )
    yield archive
    archive.unlink(missing_ok=True)
    kube.run("delete", "clusterrolebinding", f"{intruder}-checkpointer", check=False)


def _registry_status(url: str, headers: dict[str, str] | None = None) -> int:
    accept = "application/vnd.oci.image.manifest.v1+json"
    return _call(url, method="GET", headers={"Accept": accept, **(headers or {})})[0]


@pytest.fixture
def intruder(kube: Kube, namespace: str) -> Iterator[str]:
    """The hostile namespace with its ServiceAccount; ``namespace`` is the victim's."""
    hostile = f"{namespace[:50]}-evil"
    kube.run("create", "namespace", hostile)
    kube.run("create", "serviceaccount", INTRUDER, "-n", hostile)
    yield hostile
    kube.run("delete", "namespace", hostile, "--wait=false", check=False)


def _webhook_base(cluster: lc.Cluster, podmigrate: Podmigrate) -> str:
    address = getattr(podmigrate.installation, "webhook_address", None)
    if not address:
        instance = int(cluster.nodes[0].address.split(".")[2]) - 1
        address = f"{overlay.webhook_address(instance=instance)}:{overlay.WEBHOOK_PORT}"
    return f"https://{address}"


def _review(request: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "forged", **request}}


def test_a_hostile_pod_can_neither_move_nor_read_another_namespaces_pod(
    kube: Kube,
    cluster: lc.Cluster,
    podmigrate: Podmigrate,
    namespace: str,
    intruder: str,
    genuine_archive: Path,
    tmp_path: Path,
) -> None:
    victim_node = cluster.nodes[0].name
    kube.apply(counter_pod(namespace, victim_node, cluster.images["counter"]))
    wait_for("victim counting", lambda: len(kube.logs("counter", namespace).split()) >= 2)
    victim_uid = kube.get("pod", "counter", namespace)["metadata"]["uid"]
    repository = kube.get("configmap", "podmigrate-config", "podmigrate-system")["data"]["CHECKPOINT_REPOSITORY"]
    # A checkpoint image of the victim's namespace in the registry, as one is during a migration (encrypted and pushed
    # with the agents' credentials; its content here is a checkpoint of the intruder's own pod: only where it lies matters).
    victim_repo = contract.checkpoint_repository(root=repository, namespace=namespace, pod="counter")
    registry, _, repo_path = victim_repo.partition("/")
    canary = tmp_path / "canary"
    canary.write_text("a host file\n")
    forged = hostile.make_hostile_archive(
        archive=genuine_archive, dest=tmp_path / "plain.tar", attack=hostile.Attack.DELETED_TRAVERSAL, canary=canary
    )
    push = cluster.registry_credentials(registryauth.PUSH_USER).for_registry(cluster.registry)
    pushed = asyncio.run(hostile.push_hostile(
        forged, registry=registry, repository=repo_path, tag="victim", container="counter", pod="counter",
        namespace=namespace, credentials=push,
    ))  # fmt: skip
    victim_image = f"{victim_repo}@{pushed.rpartition('@')[2]}"

    # 1. Forged AdmissionReviews, straight to the webhooks: the TLS handshake needs the API server's client certificate.
    base = _webhook_base(cluster, podmigrate)
    eviction = _review({
        "kind": {"group": "policy", "version": "v1", "kind": "Eviction"}, "resource": {"group": "", "version": "v1", "resource": "pods"},
        "subResource": "eviction", "operation": "CREATE", "namespace": namespace, "name": "counter",
    })  # fmt: skip
    restore = _review({
        "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE", "namespace": namespace,
        "object": {"metadata": {"generateName": "x-", "namespace": namespace}, "spec": {"containers": []}},
    })  # fmt: skip
    # A certificate from the cluster CA (the kind every kubelet and admin has) is not the API server's webhook client.
    cp = cluster.controlplane()
    cert, key = cp.issue_serving_cert(name="intruder-client", ips=["127.0.0.1"])
    with_cluster_cert = _insecure()
    with_cluster_cert.load_cert_chain(cert, key)
    for path, review in (
        ("/intercept-evictions", eviction), ("/mutate-pods", restore), ("/validate-pods", restore),
        ("/validate-podmigrations", restore), ("/validate-checkpoints", restore),
    ):  # fmt: skip
        for context in (None, with_cluster_cert):
            status, answer = _call(base + path, body=review, context=context)
            assert status in (0, 403), f"{path} answered a forged review: {status} {answer[:300]}"

    # 2. The agents: the intruder's own token (the API server's audience), then one minted for the agents' audience.
    own = kube.token(INTRUDER, intruder)
    right_audience = kube.run("create", "token", INTRUDER, "-n", intruder, f"--audience={contract.AUDIENCE}").stdout.strip()
    controller_api_token = kube.token("podmigrate-controller", "podmigrate-system")  # stolen, but for the API server
    pod_ref = {"namespace": namespace, "pod": "counter"}
    calls = [
        ("POST", contract.PATH_CHECKPOINT, {**pod_ref, "image_repository": f"{repository}/{namespace}/counter", "tag": "x"}),
        ("POST", contract.PATH_THAW, pod_ref),
        ("POST", contract.PATH_KILL, pod_ref),
        ("POST", contract.PATH_FREEZE_LEASE, {**pod_ref, "seconds": 60}),
        ("GET", f"{contract.PATH_FROZEN}?namespace={namespace}&pod=counter", None),
        ("DELETE", contract.PATH_IMAGES, {"image": victim_image}),
        ("DELETE", contract.PATH_CHECKPOINT, {"request_id": "anything"}),
        ("POST", contract.PATH_VOLUMES, {**pod_ref, "image": victim_image}),
        ("GET", f"{contract.PATH_VOLUMES}?namespace={namespace}&pod=counter", None),
        ("DELETE", contract.PATH_VOLUMES, pod_ref),
    ]
    for node in cluster.nodes:
        agent = f"https://{node.address}:{overlay.AGENT_PORT}"
        for method, path, body in calls:
            for token, expected in ((None, 401), (own, 401), (controller_api_token, 401), (right_audience, 403)):
                status, answer = _call(agent + path, method=method, body=body, token=token)
                assert status == expected, f"{node.name} {method} {path}: {status} {answer[:300]}"

    # 3. The registry: no anonymous pull, no pull with made-up credentials; the image is there (the pull user reads it).
    manifest_url = f"http://{registry}/v2/{repo_path}/manifests/{pushed.rpartition('@')[2]}"
    assert _registry_status(manifest_url) == 401
    scope = f"repository:{repo_path}:pull"
    with pytest.raises(urllib.error.HTTPError) as refused:
        registryauth.bearer_headers(
            registry=registry, credentials=Credentials(username="podmigrate-pull", password="guess"), scope=scope
        )
    assert refused.value.code == 401
    anonymous = registryauth.bearer_headers(registry=registry, credentials=None, scope=scope)  # a token with no access
    assert _registry_status(manifest_url, anonymous) == 401
    pull = cluster.registry_credentials(registryauth.PULL_USER).for_registry(cluster.registry)
    assert _registry_status(manifest_url, registryauth.bearer_headers(registry=registry, credentials=pull, scope=scope)) == 200

    # 4. A pod of its own that names the victim's checkpoint image: refused at admission.
    stolen = (
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: thief, namespace: {intruder}}}\n"
        f"spec:\n  containers:\n  - {{name: c, image: '{victim_image}'}}\n"
    )
    result = kube.run("apply", "-f", "-", input=stolen, check=False)
    assert result.returncode != 0 and f"checkpoint images of namespace {namespace}" in result.stderr, result.stderr
    same_namespace = stolen.replace(f"namespace: {intruder}", f"namespace: {namespace}")
    result = kube.run("apply", "-f", "-", input=same_namespace, check=False)  # even by the admin, outside a migration
    assert result.returncode != 0 and "only podmigrate restores pods from checkpoint images" in result.stderr, result.stderr

    # 5. A PodMigration for a pod it may not delete: the intruder is given create on PodMigrations there, nothing more.
    kube.run("create", "role", "migrate-only", "-n", namespace, "--verb=create,get",
             "--resource=podmigrations.podmigrate.io,podcheckpoints.podmigrate.io,podrestores.podmigrate.io,"
             "checkpointschedules.podmigrate.io")  # fmt: skip
    kube.run("create", "rolebinding", "intruder-migrates", "-n", namespace, "--role=migrate-only",
             f"--serviceaccount={intruder}:{INTRUDER}")  # fmt: skip
    as_intruder = tmp_path / "intruder.kubeconfig"
    as_intruder.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": cluster.server, "certificate-authority": str(cluster.ca_cert)}}],
        "users": [{"name": "u", "user": {"token": own}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}], "current-context": "c",
    }))  # fmt: skip
    wait_for(
        "the role to apply",
        lambda: kube.run("auth", "can-i", "create", "podmigrations.podmigrate.io", "-n", namespace,
                         kubeconfig=str(as_intruder), check=False).stdout.strip() == "yes",
    )  # fmt: skip
    result = kube.run("apply", "-f", "-", input=migration(namespace, "counter"), kubeconfig=str(as_intruder), check=False)
    assert result.returncode != 0, result.stdout
    assert "may not delete pods counter" in result.stderr, result.stderr
    #    The same for a checkpoint of its memory (exec rights), a schedule of them, and a pod restored from one (create pods).
    for kind, spec, refusal in (
        ("PodCheckpoint", "{podName: counter}", "may not create pods/exec counter"),
        ("CheckpointSchedule", "{podName: counter, schedule: '* * * * *'}", "may not create pods/exec counter"),
        ("PodRestore", "{checkpointName: anything}", "may not create pods"),
    ):
        manifest = (
            f"apiVersion: podmigrate.io/v1alpha1\nkind: {kind}\nmetadata: {{name: x, namespace: {namespace}}}\nspec: {spec}\n"
        )
        result = kube.run("apply", "-f", "-", input=manifest, kubeconfig=str(as_intruder), check=False)
        assert result.returncode != 0 and refusal in result.stderr, (kind, result.stderr)

    # 6. Malicious checkpoint archives restored on a node (pushed where the admission guard does not look: CRI-O
    #    restores any checkpoint image). Each is refused or contained; the host file they aim at is untouched.
    before = hostile.canary_state(canary)
    images = cluster.registry_credentials(registryauth.IMAGES_USER).for_registry(cluster.registry)
    for attack in NODE_ATTACKS:
        archive = hostile.make_hostile_archive(archive=genuine_archive, dest=tmp_path / f"{attack}.tar", attack=attack,
                                               canary=canary)  # fmt: skip
        image = asyncio.run(hostile.push_hostile(
            archive, registry=cluster.registry, repository=f"{registryauth.CLUSTER_IMAGES}/hostile-{intruder}", tag=str(attack),
            container="counter", pod="mine", namespace=intruder, credentials=images,
        ))  # fmt: skip
        name = f"evil-{attack}"
        kube.apply(
            f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {intruder}}}\nspec:\n  nodeName: {victim_node}\n"
            f"  terminationGracePeriodSeconds: 0\n  containers:\n  - {{name: counter, image: '{image}'}}\n"
        )

        def settled(pod: str = name) -> dict[str, Any] | None:
            statuses = kube.get("pod", pod, intruder)["status"].get("containerStatuses") or []
            state = statuses[0]["state"] if statuses else {}
            waiting = state.get("waiting") or {}
            return state if "running" in state or waiting.get("reason") in ("CreateContainerError", "ErrImagePull") else None

        state = wait_for(f"the node to act on {attack}", settled, timeout=90)
        expected = archive.expected
        if expected.fails:
            assert state.get("waiting", {}).get("reason") == expected.reason, (attack, state)
            assert expected.message in state["waiting"].get("message", ""), (attack, state)
        else:
            assert "running" in state, (attack, state)
        assert hostile.canary_intact(canary, before), f"{attack} reached the host file"
        kube.run("delete", "pod", name, "-n", intruder, "--grace-period=0", "--force", check=False)

    # Nothing happened to the victim.
    pod = kube.get("pod", "counter", namespace)
    assert pod["metadata"]["uid"] == victim_uid and pod["status"]["phase"] == "Running"
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    before = len(kube.logs("counter", namespace).split())
    wait_for("the victim still counting (never frozen)", lambda: len(kube.logs("counter", namespace).split()) > before + 1)
    assert kube.get("podmigrations", namespace=namespace)["items"] == []
    assert kube.get("podcheckpoints", namespace=namespace)["items"] == [], "its memory was never checkpointed"
