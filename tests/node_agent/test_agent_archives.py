"""Archive inspection (one pass: digest, size, config.dump), image building from it, and small helpers."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
from pathlib import Path

import pytest

from agentapi.contract import CheckpointRequest, ContractError
from node_agent import archives, tracing
from node_agent.archives import ArchiveError, archive_on_host, checkpoint_info, inspect_archive
from ocicheckpoint import names
from ocicheckpoint.image import checkpoint_image, parse_manifest
from tests.node_agent.agent_fakes import make_archive


def _sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_inspect_hashes_the_whole_file_and_reads_config_dump(tmp_path: Path) -> None:
    archive = make_archive(tmp_path / "a.tar", container="counter", extra_bytes=3 << 20)
    facts = inspect_archive(archive)
    assert facts.digest == _sha256(archive)  # end-of-archive padding included
    assert facts.size == archive.stat().st_size
    assert facts.config_dump["name"] == "counter"
    assert facts.base_image.startswith("127.0.0.1:5313/podmigrate/counter@sha256:")


def test_inspect_reads_the_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = make_archive(tmp_path / "a.tar", container="c", extra_bytes=5 << 20)
    read = 0
    real_open = Path.open

    def counting_open(self: Path, *args: object, **kwargs: object):
        fh = real_open(self, *args, **kwargs)
        real_read = fh.read

        def read_and_count(n: int = -1) -> bytes:
            nonlocal read
            data = real_read(n)
            read += len(data)
            return data

        fh.read = read_and_count
        return fh

    monkeypatch.setattr(Path, "open", counting_open)
    inspect_archive(archive)
    assert read == archive.stat().st_size


def test_inspect_handles_long_names_and_dot_slash(tmp_path: Path) -> None:
    path = tmp_path / "pax.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        long = tarfile.TarInfo("checkpoint/" + "x" * 200)
        long.size = 10
        tar.addfile(long, io.BytesIO(b"0123456789"))
        data = json.dumps({"rootfsImage": "r:1/img:v1", "runtime": "runc"}).encode()
        member = tarfile.TarInfo("./config.dump")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    facts = inspect_archive(path)
    assert facts.digest == _sha256(path)
    assert facts.base_image == "r:1/img:v1"


def test_not_a_checkpoint_archive(tmp_path: Path) -> None:
    path = tmp_path / "plain.tar"
    with tarfile.open(path, "w") as tar:
        member = tarfile.TarInfo("hello")
        tar.addfile(member, io.BytesIO(b""))
    with pytest.raises(ArchiveError, match=r"no config\.dump"):
        inspect_archive(path)
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(ArchiveError):
        inspect_archive(tmp_path / "junk.tar")


def test_checkpoint_image_from_the_facts(tmp_path: Path) -> None:
    archive = make_archive(tmp_path / "a.tar", container="counter")
    facts = inspect_archive(archive)
    info = checkpoint_info(
        facts=facts, pod="p", namespace="ns", container="counter", criu_version="4.1.1", engine="CRI-O", cgroup_version="v1"
    )
    image = checkpoint_image(archive=archive, info=info, archive_digest=facts.digest)
    manifest = parse_manifest(image.manifest_bytes)
    assert manifest.checkpoint_container == "counter"
    assert manifest.layers[0].digest == facts.digest
    assert manifest.annotations[names.ANNOTATION_ROOTFS_IMAGE_NAME] == facts.base_image
    assert manifest.annotations[names.ANNOTATION_ROOTFS_IMAGE_ID] == "sha256:" + "b" * 64
    assert manifest.annotations[names.ANNOTATION_NAMESPACE] == "ns"


def test_archive_on_host(tmp_path: Path) -> None:
    host = tmp_path / "host"
    real = host / "var/lib/kubelet/checkpoints/checkpoint-p_ns-c-1.tar"
    real.parent.mkdir(parents=True)
    real.write_bytes(b"x")
    assert archive_on_host("/var/lib/kubelet/checkpoints/checkpoint-p_ns-c-1.tar", host_root=host) == real
    link = real.with_name("link.tar")
    os.symlink("/etc/passwd", link)
    for bad in (
        "relative.tar",
        "/var/lib/kubelet/checkpoints/../../../etc/shadow.tar",
        "/etc/passwd",
        str(link).removeprefix(str(host)),
    ):
        with pytest.raises(ArchiveError):
            archive_on_host(bad, host_root=host)


def test_criu_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "criu"
    fake.write_text("#!/bin/sh\necho 'Version: 4.1.1'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert archives.criu_version() == "4.1.1"
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert archives.criu_version() == "unknown"


def test_contract_round_trip() -> None:
    body = {
        "namespace": "default",
        "pod": "counter",
        "containers": ["a", "b"],
        "image_repository": "127.0.0.1:5313/ckpt/counter",
        "tag": "m-1",
        "freeze": True,
        "timeout_seconds": 30,
    }
    req = CheckpointRequest.from_json(body)
    assert req.to_json() == body
    assert req.repository.registry == "127.0.0.1:5313"
    assert req.tag_for("a", multiple=True) == "m-1-a"
    assert req.tag_for("a", multiple=False) == "m-1"
    defaults = CheckpointRequest.from_json({k: body[k] for k in ("namespace", "pod", "image_repository", "tag")})
    assert (defaults.freeze, defaults.timeout_seconds, defaults.containers) == (True, 60, None)
    with pytest.raises(ContractError):
        CheckpointRequest.from_json({**body, "containers": ["a", "a"]})


def test_incoming_context() -> None:
    from opentelemetry import trace

    ctx = tracing.incoming_context({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
    span_context = trace.get_current_span(ctx).get_span_context()
    assert f"{span_context.trace_id:032x}" == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_leftover_archives_are_swept_and_nothing_else(tmp_path: Path) -> None:
    old, fresh = tmp_path / "checkpoint-web_shop-app-2026.tar", tmp_path / "checkpoint-db_shop-app-2026.tar"
    other = tmp_path / "notes.txt"
    for path in (old, fresh, other):
        path.write_bytes(b"memory")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    os.utime(other, (time.time() - 3600, time.time() - 3600))
    assert archives.sweep(tmp_path, older_than_s=900) == [old]
    assert fresh.exists() and other.exists()
    assert archives.sweep(tmp_path, older_than_s=0) == [fresh], "at agent start: every archive is a leftover"
    assert archives.sweep(tmp_path / "missing", older_than_s=0) == []


def _aged(path: Path, seconds: float = 3600) -> Path:
    os.utime(path, (time.time() - seconds, time.time() - seconds), follow_symlinks=False)
    return path


def test_a_sweep_takes_an_archives_side_files_and_touches_only_names_the_kubelet_writes(tmp_path: Path) -> None:
    """``<archive>.enc`` (an encrypted copy) and an unpacked ``<archive>.d`` hold the same memory; anything else stays."""
    archive = tmp_path / "checkpoint-web-5f7d.x_shop-app-2026-11-30T10:19:34Z.tar"
    archive.write_bytes(b"memory")
    encrypted = tmp_path / f"{archive.name}.enc"
    encrypted.write_bytes(b"ciphertext")
    unpacked = tmp_path / f"{archive.name}.d"
    (unpacked / "checkpoint").mkdir(parents=True)
    (unpacked / "checkpoint" / "pages-1.img").write_bytes(b"memory")
    outside = tmp_path.parent / f"{tmp_path.name}-kept.tar"
    outside.write_bytes(b"not ours")
    link = tmp_path / "checkpoint-db_shop-app-2026-11-30T10:19:34Z.tar"
    link.symlink_to(outside)
    lookalikes = [
        "checkpoint-notes.tar", "checkpoint.tar", "checkpoint-web_shop-app-2026.tar.", "my-checkpoint-web_shop-app-2026.tar",
        "checkpoint-web_shop-app-2026.tgz", "checkpoint-Web_shop-app-2026.tar", "checkpoint-web_shop-app-now.tar",
    ]  # fmt: skip
    for name in lookalikes:
        (tmp_path / name).write_bytes(b"an operator's file")
    for path in (archive, encrypted, unpacked, link, *(tmp_path / name for name in lookalikes)):
        _aged(path)

    assert sorted(archives.sweep(tmp_path, older_than_s=0)) == sorted([archive, encrypted, unpacked])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([link.name, *lookalikes])
    assert link.is_symlink() and outside.read_bytes() == b"not ours", "never through a symlink"


def test_a_sweep_leaves_the_archives_a_request_still_holds(tmp_path: Path) -> None:
    held = _aged(make_archive(tmp_path / "checkpoint-web_shop-app-2026.tar", container="app"))
    held_side = tmp_path / f"{held.name}.enc"
    held_side.write_bytes(b"ciphertext")
    _aged(held_side)
    leftover = _aged(make_archive(tmp_path / "checkpoint-db_shop-app-2026.tar", container="app"))
    assert archives.sweep(tmp_path, older_than_s=900, keep=[held]) == [leftover]
    assert held.exists() and held_side.exists()


@pytest.mark.parametrize(
    "name",
    ["checkpoint-web_shop-app-2026-11-30T10:19:34Z.tar", "checkpoint-web.v2_kube-system-side-car-2026-11-30T10:19:34+01:00.tar"],
)
def test_the_archive_name_pattern_is_the_kubelets(name: str) -> None:
    found = archives.ARCHIVE_NAME.fullmatch(name)
    assert found is not None
    rebuilt = names.KUBELET_ARCHIVE_PATTERN.format(**found.groupdict())
    assert rebuilt == name
