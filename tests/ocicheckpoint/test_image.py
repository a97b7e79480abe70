"""The checkpoint image format: what runtimes look for must be there, spelled as upstream spells it."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from ocicheckpoint import image as oci
from ocicheckpoint import names
from ocicheckpoint.reference import parse_reference


def _archive(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / names.CHECKPOINT_DIRECTORY).mkdir(parents=True)
    (src / names.CHECKPOINT_DIRECTORY / "pages-1.img").write_bytes(b"\0" * 4096)
    (src / names.CONFIG_DUMP_FILE).write_text(json.dumps({"rootfsImageName": "r/x@sha256:" + "a" * 64}))
    archive = tmp_path / "checkpoint.tar"
    with tarfile.open(archive, "w") as tar:
        for entry in sorted(src.iterdir()):
            tar.add(entry, arcname=entry.name)
    return archive


def test_checkpoint_image_is_an_oci_image_with_every_runtimes_annotation(tmp_path: Path) -> None:
    archive = _archive(tmp_path)
    info = oci.CheckpointInfo(
        container="app",
        pod="web-0",
        namespace="prod",
        rootfs_image_name="reg:5000/app@sha256:" + "b" * 64,
        rootfs_image_ref="sha256:" + "b" * 64,
        runtime="runc",
        criu_version="4.1.1",
    )
    img = oci.checkpoint_image(archive=archive, info=info)
    manifest = json.loads(img.manifest_bytes)
    assert manifest["mediaType"] == names.MEDIA_TYPE_OCI_MANIFEST
    assert manifest["config"]["mediaType"] == names.MEDIA_TYPE_OCI_CONFIG
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == names.MEDIA_TYPE_OCI_LAYER_TAR
    assert layer["digest"] == oci.sha256_file(archive)[0], "the archive is the layer, unchanged"
    config = json.loads(img.config_bytes)
    assert config["rootfs"]["diff_ids"] == [layer["digest"]], "uncompressed: diff_id == layer digest"
    assert config["os"] == "linux" and config["architecture"] == oci.go_arch()
    annotations = manifest["annotations"]
    for key in names.CHECKPOINT_NAME_ANNOTATIONS:
        assert annotations[key] == "app"
    assert annotations["io.kubernetes.cri-o.annotations.checkpoint.name"] == "app"
    assert annotations[names.ANNOTATION_CRIU_VERSION] == "4.1.1"
    assert annotations[names.ANNOTATION_ROOTFS_IMAGE_NAME].startswith("reg:5000/app@")
    parsed = oci.parse_manifest(img.manifest_bytes)
    assert parsed.checkpoint_container == "app"
    assert img.manifest_digest == oci.sha256_bytes(img.manifest_bytes)


def test_ordinary_images_are_not_checkpoints() -> None:
    config = oci.Descriptor(media_type=names.MEDIA_TYPE_OCI_CONFIG, digest="sha256:" + "c" * 64, size=2)
    manifest = oci.parse_manifest(oci.build_manifest(config=config, layers=[]))
    assert manifest.checkpoint_container is None


def test_image_config_round_trip() -> None:
    raw = oci.build_config(
        diff_ids=["sha256:" + "d" * 64], entrypoint=["/bin/sh"], cmd=["-c", "true"], env=["A=1"], working_dir="/w"
    )
    cfg = oci.parse_config(raw)
    assert cfg.entrypoint == ("/bin/sh",) and cfg.cmd == ("-c", "true") and cfg.env == ("A=1",) and cfg.working_dir == "/w"


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("127.0.0.1:5310/podmigrate/counter:v1", "127.0.0.1:5310", "podmigrate/counter", "v1", None),
        ("reg.example:443/a/b@sha256:" + "e" * 64, "reg.example:443", "a/b", None, "sha256:" + "e" * 64),
        ("localhost/x", "localhost", "x", None, None),
    ],
)
def test_references(text: str, registry: str, repository: str, tag: str | None, digest: str | None) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)
    assert str(ref) == text


@pytest.mark.parametrize("bad", ["counter:v1", "reg:5000/UPPER", "reg:5000/a@sha256:short"])
def test_bad_references_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_reference(bad)
