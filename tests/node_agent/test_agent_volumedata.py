"""A pod's emptyDir data through the agent: captured with the checkpoint, staged, moved in by the CRIU hook.

The agent runs in-process (``conftest``); the CRIU hook runs as the real shell script, started
by a parent whose command line says ``restore --bundle <dir>`` like runc's, against an OCI
config written the way containerd's CRI and CRI-O write theirs.
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from agentapi.contract import CheckpointResponse
from node_agent import dumphook
from node_agent.volumedata import EMPTY_DIR_PLUGIN, VolumeData
from ocicheckpoint import names
from ocicheckpoint.image import sha256_bytes
from ocicheckpoint.volumedata import VolumeLayer, volume_data_image
from tests.node_agent.conftest import Agent

HOOK = dumphook.SCRIPT


def _source_volumes(agent: Agent) -> tuple[Path, Path]:
    base = agent.volumes.kubelet_root / "pods" / "uid1" / "volumes" / EMPTY_DIR_PLUGIN
    data, shm = base / "data", base / "shm"
    (data / "logs").mkdir(parents=True)
    shm.mkdir(parents=True)
    (data / "logs" / "app.log").write_text("line 1\nline 2\n")
    (data / "shared.db").write_bytes(os.urandom(70_000))
    os.chmod(data / "shared.db", 0o664)  # group-writable: CRIU compares modes, so it must stay so
    (data / "current").symlink_to("logs/app.log")
    (shm / "lock").write_text("held")
    return data, shm


async def _checkpoint_scratch(agent: Agent) -> CheckpointResponse:
    body = agent.checkpoint_body("scratch", volumes=[{"name": "data"}, {"name": "shm", "medium": "Memory"}])
    status, answer = await agent.call("POST", "/v1/checkpoint", body)
    assert status == 200, answer
    return CheckpointResponse.from_json(answer)


async def test_checkpoint_pushes_the_emptydir_files_as_one_artifact(agent: Agent) -> None:
    _source_volumes(agent)
    response = await _checkpoint_scratch(agent)
    data = response.volume_data
    assert data is not None
    assert data.volumes == ("data", "shm")
    assert data.image == f"{agent.registry_host}/ckpt/default/scratch@{data.digest}"
    assert agent.registry.tags["ckpt/default/scratch:t1-volumes"] == data.digest
    manifest = json.loads(agent.registry.manifests[data.digest])
    assert manifest["artifactType"] == names.ARTIFACT_TYPE_VOLUME_DATA
    assert manifest["config"]["mediaType"] == names.MEDIA_TYPE_VOLUME_DATA_CONFIG
    by_name = {layer["annotations"][names.ANNOTATION_VOLUME_NAME]: layer for layer in manifest["layers"]}
    assert by_name["shm"]["annotations"][names.ANNOTATION_VOLUME_MEDIUM] == "Memory"
    assert data.data_bytes == sum(layer["size"] for layer in manifest["layers"])
    with tarfile.open(fileobj=io.BytesIO(agent.registry.blobs[by_name["data"]["digest"]])) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert set(members) == {"logs", "logs/app.log", "shared.db", "current"}
    assert members["shared.db"].mode == 0o664
    assert members["current"].issym() and members["current"].linkname == "logs/app.log"
    assert members["shared.db"].uname == ""  # numeric owners only
    # Nothing of the pod's files stays behind on the node.
    assert not any((agent.volumes.volume_dir / ".capture").iterdir())


async def test_a_volume_the_pod_does_not_have_is_refused_before_anything_freezes(agent: Agent) -> None:
    status, body = await agent.call("POST", "/v1/checkpoint", agent.checkpoint_body("scratch", volumes=[{"name": "nope"}]))
    assert status == 404
    assert "no emptyDir volume" in body["error"]
    assert agent.state("scratch", "writer") == "THAWED"
    assert agent.registry.tags == {}


async def test_a_failed_capture_unfreezes_and_deletes_what_was_pushed(agent: Agent) -> None:
    # The volume exists in the spec but not on disk (a wrong --kubelet-root-dir): the checkpoint fails whole.
    status, body = await agent.call("POST", "/v1/checkpoint", agent.checkpoint_body("scratch", volumes=[{"name": "data"}]))
    assert status == 500
    assert "emptyDir data is not at" in body["error"]
    assert agent.state("scratch", "writer") == "THAWED"
    assert agent.registry.manifests == {}


def _bundle(
    tmp: Path, *, kubelet_root: Path, uid: str, containerd: bool, name: str = "scratch", env: tuple[str, ...] = ()
) -> Path:
    bundle = tmp / "bundle"
    bundle.mkdir()
    pod_dir = kubelet_root / "pods" / uid
    keys = (
        ("io.kubernetes.cri.sandbox-namespace", "io.kubernetes.cri.sandbox-name", "io.kubernetes.cri.sandbox-uid")
        if containerd
        else ("io.kubernetes.pod.namespace", "io.kubernetes.pod.name", "io.kubernetes.pod.uid")
    )
    config = {
        "annotations": dict(zip(keys, ("default", name, uid), strict=True)),
        "process": {"env": ["PATH=/usr/bin:/bin", *env]},
        "mounts": [
            {"destination": "/etc/hosts", "source": str(pod_dir / "etc-hosts"), "type": "bind"},
            {"destination": "/data", "source": str(pod_dir / "volumes" / EMPTY_DIR_PLUGIN / "data"), "type": "bind"},
        ],
    }
    (bundle / "config.json").write_text(json.dumps(config, indent=None if containerd else 1))
    for vol in ("data", "shm"):
        (pod_dir / "volumes" / EMPTY_DIR_PLUGIN / vol).mkdir(parents=True)
    return bundle


def _run_hook(*, action: str, bundle: Path, volume_dir: Path) -> subprocess.CompletedProcess[str]:
    # The hook's parent stands in for CRIU; its parent's command line is runc's (restore --bundle <dir>).
    runc = ["sh", "-c", 'sh "$0"; exit $?', str(HOOK), "restore", "--bundle", str(bundle), "container-id"]
    env = {**os.environ, "CRTOOLS_SCRIPT_ACTION": action, "PODMIGRATE_VOLUME_DIR": str(volume_dir)}
    return subprocess.run(["sh", "-c", " ".join(f"'{a}'" for a in runc) + "; exit $?"], env=env, text=True, capture_output=True)


@pytest.mark.parametrize("containerd", [True, False], ids=["containerd", "cri-o"])
async def test_staged_data_is_moved_into_the_new_pod_before_its_restore(agent: Agent, tmp_path: Path, containerd: bool) -> None:
    _source_volumes(agent)
    image = (await _checkpoint_scratch(agent)).volume_data
    assert image is not None
    target = VolumeData(kubelet_root=tmp_path / "target-kubelet", volume_dir=agent.volumes.volume_dir)

    status, staged = await agent.call("POST", "/v1/volumes", {"namespace": "default", "pod": "scratch", "image": image.image})
    assert status == 200, staged
    assert staged["volumes"] == ["data", "shm"]
    assert staged["data_bytes"] == image.data_bytes
    assert (await agent.call("GET", "/v1/volumes?namespace=default&pod=scratch")) == (200, {"restored": []})

    bundle = _bundle(tmp_path, kubelet_root=target.kubelet_root, uid="new-uid", containerd=containerd)
    assert _run_hook(action="pre-dump", bundle=bundle, volume_dir=target.volume_dir).returncode == 0  # not its stage
    done = _run_hook(action="pre-restore", bundle=bundle, volume_dir=target.volume_dir)
    assert done.returncode == 0, done.stderr
    moved = target.kubelet_root / "pods" / "new-uid" / "volumes" / EMPTY_DIR_PLUGIN
    assert (moved / "data" / "logs" / "app.log").read_text() == "line 1\nline 2\n"
    assert stat.S_IMODE((moved / "data" / "shared.db").stat().st_mode) == 0o664
    assert os.readlink(moved / "data" / "current") == "logs/app.log"
    assert (moved / "shm" / "lock").read_text() == "held"
    assert (await agent.call("GET", "/v1/volumes?namespace=default&pod=scratch")) == (200, {"restored": ["new-uid"]})

    assert (await agent.call("DELETE", "/v1/volumes", {"namespace": "default", "pod": "scratch"})) == (200, {"unstaged": True})
    assert not (agent.volumes.volume_dir / "default").exists()
    assert (await agent.call("DELETE", "/v1/volumes", {"namespace": "default", "pod": "scratch"})) == (200, {"unstaged": False})


async def test_a_replacement_with_a_new_name_gets_the_files_of_the_pod_it_restores(agent: Agent, tmp_path: Path) -> None:
    _source_volumes(agent)
    image = (await _checkpoint_scratch(agent)).volume_data
    assert image is not None
    assert (await agent.call("POST", "/v1/volumes", {"namespace": "default", "pod": "scratch", "image": image.image}))[0] == 200
    target = tmp_path / "target-kubelet"
    # A ReplicaSet's replacement: another name, and the control service's PODMIGRATE_RESTORED_FROM.
    bundle = _bundle(tmp_path, kubelet_root=target, uid="rs-uid", containerd=True, name="scratch-7f9c",
                     env=("PODMIGRATE_RESTORED_FROM=default/scratch",))  # fmt: skip
    done = _run_hook(action="pre-restore", bundle=bundle, volume_dir=agent.volumes.volume_dir)
    assert done.returncode == 0, done.stderr
    assert (target / "pods" / "rs-uid" / "volumes" / EMPTY_DIR_PLUGIN / "data" / "shared.db").exists()
    assert (await agent.call("GET", "/v1/volumes?namespace=default&pod=scratch")) == (200, {"restored": ["rs-uid"]})


@pytest.mark.parametrize(
    ("claim", "why"),
    [("other/scratch", "outside its namespace"), ("default/../../etc", "invalid pod"), ("default/", "invalid pod")],
)
def test_the_hook_refuses_files_a_pod_may_not_have(tmp_path: Path, claim: str, why: str) -> None:
    volume_dir = tmp_path / "restore-volumes"
    (volume_dir / "other" / "scratch" / "data").mkdir(parents=True)
    (volume_dir / "other" / "scratch" / "data" / "secret").write_text("theirs")
    bundle = _bundle(tmp_path, kubelet_root=tmp_path / "kubelet", uid="u4", containerd=True, name="thief",
                     env=(f"PODMIGRATE_RESTORED_FROM={claim}",))  # fmt: skip
    done = _run_hook(action="pre-restore", bundle=bundle, volume_dir=volume_dir)
    assert done.returncode == 1 and why in done.stderr, done
    assert (volume_dir / "other" / "scratch" / "data" / "secret").read_text() == "theirs"
    assert not (tmp_path / "kubelet" / "pods" / "u4" / "volumes" / EMPTY_DIR_PLUGIN / "data" / "secret").exists()


def test_the_hook_leaves_restores_it_has_nothing_for_alone(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, kubelet_root=tmp_path / "kubelet", uid="u2", containerd=True)
    volume_dir = tmp_path / "restore-volumes"
    volume_dir.mkdir()
    done = _run_hook(action="pre-restore", bundle=bundle, volume_dir=volume_dir)
    assert (done.returncode, done.stderr) == (0, "")
    assert list(volume_dir.iterdir()) == []


def test_the_hook_fails_the_restore_when_the_emptydir_is_missing(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, kubelet_root=tmp_path / "kubelet", uid="u3", containerd=True)
    volume_dir = tmp_path / "restore-volumes"
    (volume_dir / "default" / "scratch" / "cache").mkdir(parents=True)  # a volume the new pod does not have
    done = _run_hook(action="pre-restore", bundle=bundle, volume_dir=volume_dir)
    assert done.returncode == 1
    assert "emptyDir cache of pod default/scratch is not at" in done.stderr


def _hostile_layer(tmp_path: Path, build: str) -> VolumeLayer:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        if build == "traversal":
            info = tarfile.TarInfo("../../escaped")
            info.size = 3
            tar.addfile(info, io.BytesIO(b"bad"))
        elif build == "device":
            info = tarfile.TarInfo("null")
            info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            tar.addfile(info)
        elif build == "through-symlink":
            link = tarfile.TarInfo("etc")
            link.type, link.linkname = tarfile.SYMTYPE, "/etc"
            tar.addfile(link)
            info = tarfile.TarInfo("etc/podmigrate-owned")
            info.size = 3
            tar.addfile(info, io.BytesIO(b"bad"))
    data = buf.getvalue()
    path = tmp_path / f"{build}.tar"
    path.write_bytes(data)
    return VolumeLayer(name="data", medium="", path=path, digest=sha256_bytes(data), size=len(data))


@pytest.mark.parametrize("build", ["traversal", "device", "through-symlink"])
async def test_a_hostile_artifact_is_refused_and_nothing_lands_outside(agent: Agent, tmp_path: Path, build: str) -> None:
    image = volume_data_image(layers=[_hostile_layer(tmp_path, build)], namespace="default", pod="scratch")
    for descriptor, path in image.files:
        agent.registry.blobs[descriptor.digest] = path.read_bytes()
    agent.registry.blobs[image.config.digest] = image.config_bytes
    agent.registry.manifests[image.manifest_digest] = image.manifest_bytes
    ref = f"{agent.registry_host}/ckpt/default/scratch@{image.manifest_digest}"
    status, body = await agent.call("POST", "/v1/volumes", {"namespace": "default", "pod": "scratch", "image": ref})
    assert status == 422, body
    assert "volume data" in body["error"]
    assert not Path("/etc/podmigrate-owned").exists()
    assert not (agent.volumes.volume_dir.parent / "escaped").exists()
    assert not (agent.volumes.volume_dir / "default").exists()  # nothing committed
    assert [p.name for p in agent.volumes.volume_dir.iterdir() if p.name.startswith(".incoming")] == []


async def test_staging_refuses_an_image_that_is_not_volume_data(agent: Agent) -> None:
    status, answer = await agent.call("POST", "/v1/checkpoint", agent.checkpoint_body())
    assert status == 200
    image = answer["containers"][0]["image"]
    status, body = await agent.call("POST", "/v1/volumes", {"namespace": "default", "pod": "counter", "image": image})
    assert status == 422
    assert "not a podmigrate volume-data artifact" in body["error"]
