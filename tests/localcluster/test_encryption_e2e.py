"""End to end: checkpoint images are encrypted at rest, and only a node's key opens them.

Why here and not only in unit tests: the format is proven against ocicrypt in
``tests/ocicheckpoint/test_encryption.py``; this proves the wiring. A real migration between
the real nodes (containerd 2.3 with the ``ctd-decoder`` stream processor) and one between
stand-ins (CRI-O-like) succeed, so both runtimes decrypted at pull; the registry holds only
``+encrypted`` layers; the Go reference tool (upstream ocicrypt) decrypts the pushed layer with
the node's private key to the config's ``diff_id`` and refuses without it; and a node without
the key fails the restore with the reason.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from localcluster import cluster as lc
from localcluster import nodesetup, registryauth
from ocicheckpoint import encryption, names
from ocicheckpoint.image import Descriptor, parse_config, parse_manifest
from ocicheckpoint.reference import parse_reference
from ocicheckpoint.registry import RegistryClient
from tests.conftest import Kube, Podmigrate, wait_for
from tests.migrator.workloads import counter_pod, migration
from tests.ocicheckpoint import ocicrypt_check

pytestmark = pytest.mark.cluster


def numbers(kube: Kube, namespace: str, pod: str) -> list[int]:
    return [int(x) for x in kube.logs(pod, namespace).split() if x.isdigit()]


def _nodes(cluster: lc.Cluster, kind: str) -> list[lc.NodeInfo]:
    return [n for n in cluster.nodes if n.kind == kind]


def _migrate(
    kube: Kube, podmigrate: Podmigrate, cluster: lc.Cluster, namespace: str, *, source: str, target: str
) -> dict[str, Any]:
    """Move the counter and keep its checkpoint image (``retainCheckpoint``: a success deletes it otherwise)."""
    kube.apply(counter_pod(namespace, source, cluster.images["counter"]))
    wait_for("counter at 3", lambda: len(numbers(kube, namespace, "counter")) >= 3, timeout=90)
    kube.apply(migration(namespace, "counter", target=target, extra="  retainCheckpoint: true\n"))
    status = podmigrate.wait_done(namespace, "move-counter")["status"]
    print(f"\nmigration to {target}: {status.get('phase')} {status.get('message')}")
    assert status["phase"] == "Succeeded" and status["targetNode"] == target, status
    assert kube.get("pod", "counter", namespace)["spec"]["nodeName"] == target
    seen = wait_for("the restored counter counting on", lambda: (n := numbers(kube, namespace, "counter")) and len(n) > 3 and n)
    assert seen == list(range(seen[0], seen[0] + len(seen))), f"one unbroken count across the move: {seen}"
    return status


async def _fetch(cluster: lc.Cluster, image: str, workdir: Path) -> tuple[Descriptor, bytes, Path]:
    """(the checkpoint image's one layer, its config, the layer's blob on disk), read as the pull user."""
    ref = parse_reference(image)
    creds = cluster.registry_credentials(registryauth.PULL_USER).for_registry(cluster.registry)
    async with aiohttp.ClientSession() as session:
        client = RegistryClient(host=cluster.registry, session=session, plain_http=True, credentials=creds)
        body, media_type, _ = await client.get_manifest(repository=ref.repository, reference=ref.ref)
        manifest = parse_manifest(body, media_type=media_type)
        config = await client.get_blob_bytes(repository=ref.repository, digest=manifest.config.digest)
        (layer,) = manifest.layers
        blob = workdir / "layer.enc"
        await client.get_blob_to_file(repository=ref.repository, digest=layer.digest, path=blob)
    return layer, config, blob


@pytest.fixture(scope="module")
def tool() -> Path:
    return ocicrypt_check.build()


def test_real_node_migration_pushes_only_encrypted_layers_only_the_node_key_opens(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str, tool: Path, tmp_path: Path
) -> None:
    source, target = (n.name for n in _nodes(cluster, "real")[:2])
    status = _migrate(kube, podmigrate, cluster, namespace, source=source, target=target)  # containerd decrypted it: it restored
    (container,) = status["containers"]
    layer, config, blob = asyncio.run(_fetch(cluster, container["image"], tmp_path))
    assert layer.media_type == names.MEDIA_TYPE_OCI_LAYER_TAR_ENCRYPTED, layer
    assert names.ANNOTATION_ENC_KEYS_JWE in layer.annotations and names.ANNOTATION_ENC_PUBOPTS in layer.annotations
    (diff_id,) = parse_config(config).diff_ids
    assert diff_id != layer.digest, "the config names the plaintext, the manifest the ciphertext"
    assert b"config.dump" not in blob.read_bytes(), "no archive member name in the clear"

    node_key = nodesetup.decryption_key_dir(Path(next(n for n in cluster.nodes if n.name == target).state_dir)) / "node.key"
    opened = ocicrypt_check.go_decrypt(tool, descriptor=layer.to_json(), src=blob, dst=tmp_path / "plain", keys=[node_key])
    assert opened.returncode == 0, opened.stderr
    assert json.loads(opened.stdout)["digest"] == diff_id, "upstream ocicrypt opens it to the config's diff_id"
    assert b"config.dump" in (tmp_path / "plain").read_bytes()

    other = tmp_path / "other.key"
    encryption.write_private_key(path=other, pem=encryption.new_keypair(bits=2048)[0])
    refused = ocicrypt_check.go_decrypt(tool, descriptor=layer.to_json(), src=blob, dst=tmp_path / "plain2", keys=[other])
    assert refused.returncode != 0, "a key that is not the nodes' opens nothing"
    print(f"\nupstream ocicrypt without the node key: {refused.stderr.strip()}")


def test_stand_in_migration_is_encrypted_too(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str, tmp_path: Path
) -> None:
    source, target = (n.name for n in _nodes(cluster, "standin")[:2])
    status = _migrate(kube, podmigrate, cluster, namespace, source=source, target=target)
    (container,) = status["containers"]
    layer, config, blob = asyncio.run(_fetch(cluster, container["image"], tmp_path))
    assert encryption.is_encrypted(layer.media_type), layer
    node_keys = nodesetup.decryption_key_dir(Path(next(n for n in cluster.nodes if n.name == target).state_dir))
    plain = encryption.decrypt_layer(
        descriptor=layer, src=blob, dst=tmp_path / "plain", private_keys=encryption.load_private_keys(node_keys)
    )
    assert plain.digest == parse_config(config).diff_ids[0]


@pytest.fixture
def keyless_node(cluster: lc.Cluster) -> Iterator[lc.NodeInfo]:
    """The third stand-in, its private key taken away for the test (as on a node never given one)."""
    node = _nodes(cluster, "standin")[2]
    keys = nodesetup.decryption_key_dir(Path(node.state_dir))
    aside = keys.with_name(keys.name + ".aside")
    shutil.move(keys, aside)
    keys.mkdir(mode=0o700)
    try:
        yield node
    finally:
        shutil.rmtree(keys)
        shutil.move(aside, keys)


def test_a_node_without_the_key_cannot_restore_and_says_why(
    kube: Kube, cluster: lc.Cluster, podmigrate: Podmigrate, namespace: str, keyless_node: lc.NodeInfo
) -> None:
    source = _nodes(cluster, "standin")[0].name
    kube.apply(counter_pod(namespace, source, cluster.images["counter"]))
    wait_for("counter at 3", lambda: len(numbers(kube, namespace, "counter")) >= 3, timeout=90)
    kube.apply(migration(namespace, "counter", target=keyless_node.name, extra="  timeoutSeconds: 90\n"))
    status = podmigrate.wait_done(namespace, "move-counter")["status"]
    assert status["phase"] == "Failed", status
    events = kube.run("get", "events", "-n", namespace, "-o", "json").stdout
    reasons = " ".join(e.get("message", "") for e in json.loads(events)["items"]) + " " + status.get("message", "")
    print(f"\nrestore on a node without the key: {status.get('reason')}: {status.get('message')}")
    assert "no private key" in reasons and "decrypts it" in reasons, reasons
    pod = wait_for(
        "running again on the source", lambda: (p := kube.get("pod", "counter", namespace))["spec"]["nodeName"] == source and p
    )
    assert pod["spec"]["nodeName"] == source
