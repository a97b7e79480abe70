"""The local registry authenticates (``localcluster.registryauth``, distribution's ``auth: token``).

What these show, against the real registry (Debian's distribution 2.8) and its token server:
anonymous reads and writes of the checkpoint repository are refused with 401, wrong credentials
are refused by the token server, the pull-only credentials restored pods get cannot push or
delete, and a migration works with all of it on: the agent pushes with its Secret, the controller
copies the pull Secret into the pod's namespace and names it in the restored pod, the stand-in
node pulls with it (a real node's kubelet does the same natively:
tests/migrator/test_realnode_e2e.py passing with auth on is that proof), and the copy is removed
once no migration in the namespace is open.
"""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from localcluster import cluster as lc
from localcluster import registryauth
from migrator import pullsecrets
from ocicheckpoint.credentials import Credentials
from tests.conftest import Kube, Podmigrate, wait_for
from tests.migrator.workloads import counter_pod, migration

pytestmark = pytest.mark.cluster

REPOSITORY = f"{registryauth.CHECKPOINT_REPOSITORY}/registry-auth-e2e/probe"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def request(url: str, *, method: str = "GET", headers: dict[str, str] | None = None, data: bytes | None = None) -> int:
    """The HTTP status (no proxies: loopback only)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with opener.open(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def credentials(cluster: lc.Cluster, user: str) -> Credentials:
    found = cluster.registry_credentials(user).for_registry(cluster.registry)
    assert found is not None, f"no credentials for {user}"
    return found


def token(cluster: lc.Cluster, user: str | None, actions: str, repository: str = REPOSITORY) -> dict[str, str]:
    creds = credentials(cluster, user) if user else None
    return registryauth.bearer_headers(registry=cluster.registry, credentials=creds, scope=f"repository:{repository}:{actions}")


def push_probe(cluster: lc.Cluster, headers: dict[str, str]) -> tuple[int, str]:
    """An empty-config image (config blob + manifest); (status of the first refused step or 201, manifest digest)."""
    base = f"http://{cluster.registry}/v2/{REPOSITORY}"
    config = b"{}"
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    start = urllib.request.Request(f"{base}/blobs/uploads/", method="POST", headers=headers, data=b"")
    try:
        with opener.open(start, timeout=10) as resp:
            location = resp.headers["Location"]
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    location = location if location.startswith("http") else f"http://{cluster.registry}{location}"
    sep = "&" if "?" in location else "?"
    # (octet-stream: urllib's default form type makes the registry read the body as a form, not the blob)
    blob_headers = {**headers, "Content-Type": "application/octet-stream"}
    status = request(f"{location}{sep}digest={digest}", method="PUT", headers=blob_headers, data=config)
    if status != 201:
        return status, ""
    manifest = json.dumps(
        {"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
         "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": len(config)},
         "layers": []}
    ).encode()  # fmt: skip
    status = request(f"{base}/manifests/probe", method="PUT", headers={**headers, "Content-Type": MANIFEST_TYPE}, data=manifest)
    return status, "sha256:" + hashlib.sha256(manifest).hexdigest()


def test_anonymous_pull_and_push_of_checkpoints_are_refused(cluster: lc.Cluster) -> None:
    status, digest = push_probe(cluster, token(cluster, registryauth.PUSH_USER, "pull,push"))
    assert status == 201 and digest, "the agents' credentials push"
    base = f"http://{cluster.registry}/v2/{REPOSITORY}"
    assert request(f"{base}/manifests/{digest}", headers={"Accept": MANIFEST_TYPE}) == 401
    assert request(f"{base}/manifests/{digest}", method="HEAD", headers={"Accept": MANIFEST_TYPE}) == 401
    assert request(f"{base}/blobs/uploads/", method="POST", data=b"") == 401
    # An anonymous token is issued, but with no access: the registry still refuses.
    anonymous = token(cluster, None, "pull,push")
    assert request(f"{base}/manifests/{digest}", headers={**anonymous, "Accept": MANIFEST_TYPE}) == 401
    assert push_probe(cluster, anonymous)[0] == 401
    # Not even the catalog, nor the cluster's own images, anonymously.
    assert request(f"http://{cluster.registry}/v2/_catalog") == 401
    images = f"http://{cluster.registry}/v2/podmigrate/counter/manifests/v1"
    assert request(images, headers={"Accept": MANIFEST_TYPE}) == 401


def test_wrong_credentials_are_refused(cluster: lc.Cluster) -> None:
    wrong = Credentials(username=registryauth.PUSH_USER, password="not-the-password")
    with pytest.raises(urllib.error.HTTPError) as refused:
        registryauth.bearer_headers(registry=cluster.registry, credentials=wrong, scope=f"repository:{REPOSITORY}:pull")
    assert refused.value.code == 401
    unknown = Credentials(username="nobody", password="x")
    with pytest.raises(urllib.error.HTTPError) as refused:
        registryauth.bearer_headers(registry=cluster.registry, credentials=unknown, scope=f"repository:{REPOSITORY}:pull")
    assert refused.value.code == 401
    # Basic credentials sent to the registry itself are not a token.
    base = f"http://{cluster.registry}/v2/{REPOSITORY}"
    basic = {"Authorization": credentials(cluster, registryauth.PUSH_USER).header()}
    assert request(f"{base}/blobs/uploads/", method="POST", headers=basic, data=b"") == 401


def test_pull_only_credentials_cannot_push_or_delete(cluster: lc.Cluster) -> None:
    status, digest = push_probe(cluster, token(cluster, registryauth.PUSH_USER, "pull,push"))
    assert status == 201
    base = f"http://{cluster.registry}/v2/{REPOSITORY}"
    pull = token(cluster, registryauth.PULL_USER, "pull,push,delete")  # asks for all, is granted pull
    assert request(f"{base}/manifests/{digest}", headers={**pull, "Accept": MANIFEST_TYPE}) == 200
    assert push_probe(cluster, pull)[0] == 401
    assert request(f"{base}/manifests/{digest}", method="DELETE", headers=pull) == 401
    # The nodes' own credentials read the cluster's images, never checkpoints.
    node = token(cluster, registryauth.NODE_USER, "pull")
    assert request(f"{base}/manifests/{digest}", headers={**node, "Accept": MANIFEST_TYPE}) == 401
    counter = f"http://{cluster.registry}/v2/podmigrate/counter/manifests/v1"
    assert (
        request(
            counter, headers={**token(cluster, registryauth.NODE_USER, "pull", "podmigrate/counter"), "Accept": MANIFEST_TYPE}
        )
        == 200
    )
    # The agents' credentials delete.
    delete = token(cluster, registryauth.PUSH_USER, "delete")
    assert request(f"{base}/manifests/{digest}", method="DELETE", headers=delete) == 202


def _secret(kube: Kube, namespace: str) -> dict[str, Any] | None:
    result = kube.run("get", "secret", pullsecrets.PULL_SECRET, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


@pytest.mark.parametrize("kind", ["standin", "real"])
def test_a_migration_pulls_its_checkpoint_with_the_namespace_pull_secret(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str, kind: str
) -> None:
    """A stand-in node reads the pod's imagePullSecrets like a kubelet; a real kubelet does it natively. Neither
    node's own credentials read checkpoints (test above), so the restored pod running is the pull Secret at work."""
    standins = [n.name for n in cluster.nodes if n.kind == kind]
    if len(standins) < 2:
        pytest.skip(f"fewer than two {kind} nodes")
    kube.apply(counter_pod(namespace, standins[0], cluster.images["counter"]))
    wait_for("counter at 3", lambda: len(kube.logs("counter", namespace).split()) >= 3)
    assert _secret(kube, namespace) is None
    kube.apply(migration(namespace, "counter", target=standins[1]))
    copied = wait_for("the pull Secret copied into the namespace", lambda: _secret(kube, namespace), timeout=120)
    assert copied["type"] == "kubernetes.io/dockerconfigjson"
    assert copied["metadata"]["labels"][pullsecrets.LABEL_COPY] == "true"
    done = podmigrate.wait_done(namespace, "move-counter")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    pod = kube.get("pod", "counter", namespace)
    assert pod["spec"]["nodeName"] == standins[1]
    assert {"name": pullsecrets.PULL_SECRET} in pod["spec"]["imagePullSecrets"]
    assert "@sha256:" in pod["spec"]["containers"][0]["image"]
    # The copy is pull-only: the same user as the source Secret in podmigrate-system.
    doc = json.loads(base64.b64decode(copied["data"][".dockerconfigjson"]))
    assert doc["auths"][cluster.registry]["username"] == registryauth.PULL_USER
    wait_for("the copy removed once no migration is open", lambda: _secret(kube, namespace) is None, timeout=60)
