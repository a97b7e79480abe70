"""The stand-in node against hostile checkpoint archives and image layers: refused or confined, never harm outside.

No cluster: each test builds, in a tmp dir, a genuine-looking checkpoint archive, turns it
hostile with ``localcluster.hostile``, and runs the node's own steps on it (``unpack_layer`` as a
pull does, ``prepare_restore``, then ``ContainerRuntime.restore`` with runc and the overlay mount
stubbed out). The "host" is a directory beside the rootfs holding the canary the attacks aim at,
by its absolute path; it must be exactly as it was afterwards.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest

from localcluster import hostile
from localcluster.hostile import Attack
from localcluster.node import checkpointfiles
from localcluster.node.containers import Container, ContainerError, ContainerRequest, ContainerRuntime, Sandbox
from localcluster.node.images import LocalImage, unpack_layer
from localcluster.node.restoring import RestoreError, check_base_image, prepare_restore
from ocicheckpoint import image as oci
from ocicheckpoint import names, safetar
from ocicheckpoint.reference import Reference

BASE_NAME = "registry.test/app:1"
BASE_DIGEST = "sha256:" + "1" * 64
BASE_REF = f"registry.test/app@{BASE_DIGEST}"
DESCRIPTOR = oci.Descriptor(media_type=names.MEDIA_TYPE_OCI_CONFIG, digest="sha256:" + "0" * 64, size=2)


def snapshot(top: Path) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = p.lstat()
            content = p.read_bytes() if stat.S_ISREG(st.st_mode) else None
            out[str(p.relative_to(top))] = (st.st_mode, st.st_ino, st.st_nlink, content)
    return out


def add(tar: tarfile.TarFile, name: str, data: bytes = b"", *, kind: bytes = tarfile.REGTYPE, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size = kind, mode, len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def genuine_archive(path: Path, *, uid: int = 0) -> Path:
    """A checkpoint archive laid out as the stand-in (CRI-O) writes one: CRIU images, dumps, rootfs diff, deleted files."""
    diff = io.BytesIO()
    with tarfile.open(fileobj=diff, mode="w") as tar:
        add(tar, "data", kind=tarfile.DIRTYPE, mode=0o755)
        add(tar, "data/state", b"42\n")
    spec = {
        "annotations": {names.CRIO_ANNOTATIONS_KEY: json.dumps({"io.kubernetes.pod.name": "p"})},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "process": {"user": {"uid": uid, "gid": uid}},
    }
    config = {"id": "c1", "name": "c", "rootfsImage": BASE_NAME, "rootfsImageName": BASE_NAME, "rootfsImageRef": BASE_REF}
    with tarfile.open(path, "w") as tar:
        add(tar, names.CHECKPOINT_DIRECTORY, kind=tarfile.DIRTYPE, mode=0o755)
        add(tar, f"{names.CHECKPOINT_DIRECTORY}/inventory.img", b"criu")
        add(tar, names.CONFIG_DUMP_FILE, json.dumps(config).encode())
        add(tar, names.SPEC_DUMP_FILE, json.dumps(spec).encode())
        add(tar, names.ROOTFS_DIFF_TAR, diff.getvalue())
        add(tar, names.DELETED_FILES_FILE, json.dumps(["/etc/motd"]).encode())
    return path


def local_image(root: Path, *, annotations: dict[str, str] | None = None, ref: Reference | None = None) -> LocalImage:
    return LocalImage(
        reference=ref or Reference(registry="registry.test", repository="app", tag="1", digest=BASE_DIGEST),
        manifest=oci.Manifest(
            media_type=names.MEDIA_TYPE_OCI_MANIFEST, config=DESCRIPTOR, layers=(), annotations=annotations or {}
        ),
        config=oci.ImageConfig(cmd=("sleep", "3600")),
        root=root,
    )


class FakeStore:
    def __init__(self, base: LocalImage) -> None:
        self.base = base

    def local(self, name: str) -> LocalImage | None:
        return self.base if name in (BASE_NAME, BASE_REF) else None


def request_for(image: LocalImage, tmp_path: Path, *, image_name: str) -> ContainerRequest:
    return ContainerRequest(
        name="c",
        attempt=0,
        image_name=image_name,
        image=image,
        command=[],
        args=[],
        env=[],
        working_dir="",
        mounts=[],
        annotations={},
        labels={},
        log_path=tmp_path / "c.log",
    )


class StubRuntime(ContainerRuntime):
    """CRI-O's half with the overlay mount and runc stubbed: the rootfs is a plain copy of the base image."""

    def __init__(self, state_dir: Path, *, uid: int) -> None:
        self.state_dir = state_dir
        self.uid = uid
        self.launched: list[Path | None] = []
        self.unmounted: list[Path] = []

    async def _prepare(self, *, sandbox: Sandbox, request: ContainerRequest) -> Container:
        bundle = self.state_dir / "bundle"
        shutil.rmtree(bundle, ignore_errors=True)
        bundle.mkdir(parents=True)
        shutil.copytree(request.image.root, bundle / "rootfs", symlinks=True)
        (bundle / "config.json").write_text(json.dumps({"process": {"user": {"uid": self.uid, "gid": self.uid}}}))
        return Container(id="c1", sandbox=sandbox, request=request, bundle=bundle)

    async def _launch(self, container: Container, *, restore_from: Path | None) -> None:
        self.launched.append(restore_from)

    async def _unmount(self, path: Path) -> None:
        self.unmounted.append(path)


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Any]:
    host = tmp_path / "host"
    host.mkdir()
    canary = host / "canary"
    canary.write_text("host file\n")
    os.chmod(canary, 0o640)
    base = tmp_path / "store" / "base"
    (base / "etc").mkdir(parents=True)
    (base / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (base / "etc" / "motd").write_text("hello\n")
    return {"host": host, "canary": canary, "base": base, "tmp": tmp_path}


async def restore_hostile(world: dict[str, Any], attack: Attack, *, uid: int = 0, decoy: bool = False) -> tuple[Any, Path]:
    """Pull (unpack), check and restore the hostile archive; returns the outcome (exception or container) and the rootfs."""
    tmp: Path = world["tmp"]
    archive = genuine_archive(tmp / "genuine.tar", uid=uid)
    bad = hostile.make_hostile_archive(archive=archive, dest=tmp / "hostile.tar", attack=attack, canary=world["canary"])
    info = bad.checkpoint_info(container="c", pod="p", namespace="ns")
    store = tmp / "store" / "checkpoint"
    store.mkdir(parents=True)
    runtime = StubRuntime(tmp / "state", uid=uid)
    if decoy:  # the canary's path inside the base image: what a confined attack may reach
        inside = world["base"] / str(world["canary"]).lstrip("/")
        inside.parent.mkdir(parents=True)
        inside.write_text("inside copy\n")
    try:
        unpack_layer(layer=bad.path, root=store, gzip=False)
        checkpoint = local_image(store, annotations=oci.checkpoint_annotations(info))
        base = local_image(world["base"])
        request = request_for(checkpoint, tmp, image_name="registry.test/checkpoints/p:c")
        plan = prepare_restore(checkpoint=checkpoint, request=request, images=FakeStore(base))  # type: ignore[arg-type]
        request.image = plan.base_image
        sandbox = Sandbox(uid="u", name="p", namespace="ns", hostname="p", netns_path=None, directory=tmp)
        outcome: Any = await runtime.restore(sandbox=sandbox, request=request, checkpoint=store)
    except (safetar.UnsafeArchiveError, RestoreError, ContainerError) as exc:
        outcome = exc
    return outcome, runtime.state_dir / "bundle" / "rootfs"


@pytest.mark.parametrize("attack", list(Attack))
async def test_hostile_archive_is_refused_or_confined(world: dict[str, Any], attack: Attack) -> None:
    before = snapshot(world["host"])
    outcome, rootfs = await restore_hostile(world, attack, decoy=attack is Attack.DELETED_TRAVERSAL)
    expected = hostile.EXPECTED[attack]
    assert snapshot(world["host"]) == before, "the host directory changed"
    assert hostile.canary_intact(world["canary"], hostile.canary_state(world["canary"]))
    if expected.fails:
        assert isinstance(outcome, Exception), f"{attack} was not refused"
        assert expected.message in str(outcome)
        reason = "ErrImagePull" if isinstance(outcome, safetar.UnsafeArchiveError) else outcome.reason
        assert reason == expected.reason
    else:
        assert isinstance(outcome, Container), f"{attack} failed: {outcome}"
        assert (rootfs / "data" / "state").read_text() == "42\n"  # the genuine diff applied too
        assert not (rootfs / "etc" / "motd").exists()  # and the genuine deleted.files
        inside = rootfs / str(world["canary"]).lstrip("/")
        if attack in (Attack.DIFF_ABSOLUTE_SYMLINK, Attack.DIFF_RELATIVE_SYMLINK):
            assert inside.read_text().startswith("written by a hostile")
        if attack is Attack.DELETED_TRAVERSAL:
            assert not inside.exists()  # the decoy inside the rootfs went, the host's canary stayed


async def test_a_failed_restore_is_a_create_container_error_and_unmounts(world: dict[str, Any]) -> None:
    outcome, _ = await restore_hostile(world, Attack.DIFF_DEVICE)
    assert isinstance(outcome, ContainerError)
    assert outcome.reason == "CreateContainerError"
    assert str(outcome).startswith("restoring from checkpoint: rootfs-diff.tar: entry 'pm-hostile-mem' refused: device node")


async def test_setuid_root_from_the_diff_only_for_a_root_container(world: dict[str, Any]) -> None:
    outcome, rootfs = await restore_hostile(world, Attack.DIFF_SETUID, uid=1000)
    assert isinstance(outcome, Container)
    assert stat.S_IMODE((rootfs / "pm-hostile-suid").stat().st_mode) == 0o755
    shutil.rmtree(world["tmp"] / "store" / "checkpoint")
    outcome, rootfs = await restore_hostile(world, Attack.DIFF_SETUID, uid=0)
    assert isinstance(outcome, Container)
    assert stat.S_IMODE((rootfs / "pm-hostile-suid").stat().st_mode) == 0o4755


def test_setid_rule_from_the_new_containers_spec() -> None:
    assert checkpointfiles.setid_rule({"process": {"user": {"uid": 0, "gid": 0}}}) == safetar.KEEP_SETID
    rule = checkpointfiles.setid_rule({"process": {"user": {"uid": 1000, "gid": 1000, "additionalGids": [1000, 5]}}})
    assert rule == safetar.SetIdRule(uids=frozenset({1000}), gids=frozenset({1000, 5}))


def test_a_hard_link_to_etc_passwd_is_the_containers_own(world: dict[str, Any], tmp_path: Path) -> None:
    archive, rootfs = tmp_path / "a", tmp_path / "rootfs"
    shutil.copytree(world["base"], rootfs)
    (archive).mkdir()
    with tarfile.open(archive / names.ROOTFS_DIFF_TAR, "w") as tar:
        info = tarfile.TarInfo("pw")
        info.type, info.linkname = tarfile.LNKTYPE, "/etc/passwd"
        tar.addfile(info)
        info = tarfile.TarInfo("pw2")
        info.type, info.linkname = tarfile.LNKTYPE, "../../../../../../../../etc/passwd"
        tar.addfile(info)
    host_passwd = Path("/etc/passwd").stat()
    checkpointfiles.apply_rootfs_diff(archive=archive, rootfs=rootfs, setid=safetar.STRIP_SETID)
    for name in ("pw", "pw2"):
        st = (rootfs / name).stat()
        assert (st.st_dev, st.st_ino) != (host_passwd.st_dev, host_passwd.st_ino)
        assert st.st_ino == (rootfs / "etc" / "passwd").stat().st_ino
    assert Path("/etc/passwd").stat().st_nlink == host_passwd.st_nlink


def test_an_oversized_rootfs_diff_member_with_an_injected_limit(tmp_path: Path) -> None:
    archive, rootfs = tmp_path / "a", tmp_path / "rootfs"
    archive.mkdir()
    rootfs.mkdir()
    with tarfile.open(archive / names.ROOTFS_DIFF_TAR, "w") as tar:
        add(tar, "small", b"x" * 100)
        add(tar, "large", b"x" * 5000)
    limits = safetar.Limits(max_file_bytes=4096, max_total_bytes=1 << 20)
    with pytest.raises(checkpointfiles.CheckpointFileError, match="'large' is 5000 bytes, more than the 4096 allowed per file"):
        checkpointfiles.apply_rootfs_diff(archive=archive, rootfs=rootfs, setid=safetar.KEEP_SETID, limits=limits)
    assert not (rootfs / "large").exists()
    limits = safetar.Limits(max_file_bytes=1 << 20, max_total_bytes=1000)
    with pytest.raises(checkpointfiles.CheckpointFileError, match="1000 bytes allowed in all"):
        checkpointfiles.apply_rootfs_diff(archive=archive, rootfs=rootfs, setid=safetar.KEEP_SETID, limits=limits)


def test_dump_json_limits_and_types(tmp_path: Path) -> None:
    (tmp_path / names.CONFIG_DUMP_FILE).write_text(json.dumps({"a": "x" * 200}))
    with pytest.raises(checkpointfiles.CheckpointFileError, match=r'failed to read "config.dump": .*more than the 100'):
        checkpointfiles.read_dump_json(tmp_path, names.CONFIG_DUMP_FILE, max_bytes=100)
    (tmp_path / names.DELETED_FILES_FILE).write_text(json.dumps({"not": "a list"}))
    with pytest.raises(checkpointfiles.CheckpointFileError, match="not a JSON list of paths"):
        checkpointfiles.apply_deleted_files(archive=tmp_path, rootfs=tmp_path)
    (tmp_path / names.DELETED_FILES_FILE).write_text(json.dumps(["/x"] * 100))
    with pytest.raises(checkpointfiles.CheckpointFileError, match="more than the 50"):
        checkpointfiles.apply_deleted_files(archive=tmp_path, rootfs=tmp_path, max_bytes=50)


# --- the base image ---------------------------------------------------------------------------------
def annotated(name: str = BASE_NAME, ref: str = BASE_REF) -> dict[str, str]:
    return {names.ANNOTATION_ROOTFS_IMAGE_NAME: name, names.ANNOTATION_ROOTFS_IMAGE_ID: ref}


def test_base_image_agrees_with_the_annotations_and_the_pods_original_image() -> None:
    dump = {"rootfsImageName": BASE_NAME, "rootfsImageRef": BASE_REF}
    assert check_base_image(config_dump=dump, annotations=annotated(), image="ck") == BASE_REF
    assert check_base_image(config_dump=dump, annotations=annotated(), image="ck", original_image=BASE_NAME) == BASE_REF
    assert check_base_image(config_dump=dump, annotations=annotated(), image="ck", original_image=BASE_REF) == BASE_REF
    # A second migration from this node: the restored container is named after its checkpoint image.
    again = {"rootfsImageName": "registry.test/ck/p:c@" + BASE_DIGEST, "rootfsImageRef": BASE_REF}
    ann = annotated(name=again["rootfsImageName"])
    assert check_base_image(config_dump=again, annotations=ann, image="ck2", original_image=again["rootfsImageName"]) == BASE_REF


def test_a_pinned_original_image_pins_the_reference() -> None:
    pinned = "registry.test/app@sha256:" + "3" * 64
    dump = {"rootfsImageName": pinned, "rootfsImageRef": BASE_REF}
    with pytest.raises(RestoreError, match="original spec pins"):
        check_base_image(config_dump=dump, annotations=annotated(name=pinned), image="ck", original_image=pinned)


@pytest.mark.parametrize(
    ("dump", "annotations", "original", "message"),
    [
        ({"rootfsImageName": "registry.test/evil:1", "rootfsImageRef": ""}, annotated(), None, "annotation"),
        (
            {"rootfsImageName": BASE_NAME, "rootfsImageRef": "registry.test/app@sha256:" + "2" * 64},
            annotated(),
            None,
            "annotation",
        ),
        ({"rootfsImageName": BASE_NAME, "rootfsImageRef": BASE_REF}, {}, None, "names no base image"),
        ({"rootfsImageName": BASE_NAME, "rootfsImageRef": BASE_REF}, annotated(), "registry.test/app:2", "original spec"),
        ({"rootfsImageName": BASE_NAME, "rootfsImageRef": BASE_REF}, annotated(), "registry.test/other:1", "original spec"),
        (
            {"rootfsImageName": BASE_NAME, "rootfsImageRef": BASE_REF},
            annotated(),
            "registry.test/app@sha256:" + "3" * 64,
            "original spec names",
        ),
        ({"rootfsImageName": ["x"], "rootfsImageRef": BASE_REF}, annotated(), None, "malformed"),
    ],
)
def test_base_image_mismatches_are_refused(
    dump: dict[str, Any], annotations: dict[str, str], original: str | None, message: str
) -> None:
    with pytest.raises(RestoreError, match=message):
        check_base_image(config_dump=dump, annotations=annotations, image="ck", original_image=original)


# --- image layers -------------------------------------------------------------------------------------
def layer_of(path: Path, *entries: tuple[str, bytes, bytes, str]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, kind, data, link in entries:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size = kind, link, len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return path


def test_layers_confine_symlinks_hardlinks_and_whiteouts(world: dict[str, Any], tmp_path: Path) -> None:
    host, canary = world["host"], world["canary"]
    before = snapshot(host)
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    first = layer_of(
        tmp_path / "l1.tar",
        ("var/run", tarfile.SYMTYPE, b"", "/run"),  # Debian's absolute symlink: kept, read in the root
        ("escape", tarfile.SYMTYPE, b"", str(host)),
        ("escape/canary", tarfile.REGTYPE, b"pwned", ""),
        ("var/run/pid", tarfile.REGTYPE, b"1", ""),
        ("../../../../" + str(canary).lstrip("/"), tarfile.REGTYPE, b"pwned", ""),
        ("etc/passwd", tarfile.REGTYPE, b"root:x:0:0\n", ""),
        ("pw", tarfile.LNKTYPE, b"", "/etc/passwd"),
    )
    unpack_layer(layer=first, root=rootfs, gzip=False)
    second = layer_of(
        tmp_path / "l2.tar",
        ("escape/.wh.canary", tarfile.REGTYPE, b"", ""),
        ("escape/.wh..wh..opq", tarfile.REGTYPE, b"", ""),
        ("../../../.wh." + host.name, tarfile.REGTYPE, b"", ""),
    )
    unpack_layer(layer=second, root=rootfs, gzip=False)
    assert snapshot(host) == before
    assert (rootfs / "run" / "pid").read_bytes() == b"1"
    assert (rootfs / "pw").stat().st_ino == (rootfs / "etc" / "passwd").stat().st_ino
    assert not (rootfs / str(canary).lstrip("/")).exists()  # written inside by layer 1, whited out by layer 2


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE])
def test_layers_refuse_device_nodes(tmp_path: Path, kind: bytes) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    layer = layer_of(tmp_path / "l.tar", ("dev/sda", kind, b"", ""))
    with pytest.raises(safetar.UnsafeArchiveError, match="layer: entry 'dev/sda' refused: device node"):
        unpack_layer(layer=layer, root=rootfs, gzip=False)
    assert not (rootfs / "dev" / "sda").exists()


def test_layers_have_limits(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    layer = layer_of(tmp_path / "l.tar", ("big", tarfile.REGTYPE, b"x" * 2048, ""))
    with pytest.raises(safetar.ArchiveLimitError, match="allowed per file"):
        unpack_layer(layer=layer, root=rootfs, gzip=False, limits=safetar.Limits(max_file_bytes=1024, max_total_bytes=1 << 20))


@pytest.mark.parametrize("directory", [True, False])
def test_mount_points_are_made_inside_the_root_whatever_its_symlinks_say(tmp_path: Path, directory: bool) -> None:
    from localcluster.node.containers import _make_mount_point

    host = tmp_path / "host"
    host.mkdir()
    root = tmp_path / "rootfs"
    root.mkdir()
    (root / "data").symlink_to(host)  # an image's /data -> an absolute path that exists on the host
    (root / "up").symlink_to("../../host")  # and one that climbs out
    _make_mount_point(root, "/data/x", directory=directory)
    _make_mount_point(root, "/up/y", directory=directory)
    assert list(host.iterdir()) == [], "nothing created on the host"
    inside = root / str(host).lstrip("/")
    assert (inside / "x").is_dir() if directory else (inside / "x").is_file()
    assert (root / "host" / "y").exists()
