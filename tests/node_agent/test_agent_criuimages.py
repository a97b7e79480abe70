"""The archive's CRIU images described on the one pass that uploads it, and the description in the agent's answer.

The images are a real ``criu dump`` (tests/ocicheckpoint/criudump.py): root and CRIU, as in CI.
"""

from __future__ import annotations

import io
import logging
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentapi.contract import CheckpointResponse
from node_agent import archives
from node_agent.archives import inspect_archive
from ocicheckpoint import criuimages, names
from ocicheckpoint.criuimages import Inspection, inspect_directory
from tests.node_agent import agent_fakes
from tests.node_agent.conftest import Agent
from tests.ocicheckpoint import criudump


@pytest.fixture(scope="module")
def dump() -> Iterator[criudump.Dump]:
    with criudump.dumped_tree() as made:
        yield made


def test_the_images_are_described_on_the_same_pass_and_every_byte_still_reaches_the_sink(
    dump: criudump.Dump, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = criudump.archive_of(dump, tmp_path / "checkpoint.tar")
    kept: list[str] = []
    real_inspect = criuimages.inspect_images

    def recording(images: dict[str, bytes], **kwargs: object) -> Inspection:
        kept.extend(images)
        return real_inspect(images, **kwargs)

    monkeypatch.setattr(criuimages, "inspect_images", recording)
    chunks: list[bytes] = []
    facts = inspect_archive(archive, sink=chunks.append)
    assert b"".join(chunks) == archive.read_bytes(), "the upload still gets every byte, in order"
    assert (facts.digest, facts.size, facts.config_dump["name"]) == (None, archive.stat().st_size, "app")
    assert facts.inspection == inspect_directory(dump.images)
    assert {p.pid for p in facts.inspection.processes} == {dump.shell, dump.sleep, dump.python}
    assert names.CRIU_PSTREE_IMAGE in kept and f"core-{dump.python}.img" in kept
    assert not [name for name in kept if name.startswith("pages-")], "the memory pages are never kept"
    assert sum(p.stat().st_size for p in dump.images.glob("pages-*.img")) == facts.inspection.totals.pages_bytes


def test_images_over_the_caps_are_skipped_and_the_inspection_says_so(
    dump: criudump.Dump, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = criudump.archive_of(dump, tmp_path / "checkpoint.tar")
    files = (dump.images / names.CRIU_FILES_IMAGE).stat().st_size
    monkeypatch.setattr(archives, "MAX_CRIU_IMAGE_BYTES", files - 1)
    facts = inspect_archive(archive)
    assert facts.inspection is not None
    too_big = {
        f"{p.name} ({p.stat().st_size} bytes)"
        for p in dump.images.iterdir()
        if criuimages.inspected_image(f"checkpoint/{p.name}") and p.stat().st_size >= files
    }
    assert f"{names.CRIU_FILES_IMAGE} ({files} bytes)" in too_big
    assert set(facts.inspection.skipped) == too_big
    assert {f.path for f in facts.inspection.files} == {"?"}, "without files.img no descriptor has a path"
    assert len(facts.inspection.processes) == 3

    # A total cap that the process tree alone fills (first in this archive): everything after it is
    # skipped, and without the rest there is still a tree.
    pstree = dump.images / names.CRIU_PSTREE_IMAGE
    ordered = tmp_path / "pstree-first.tar"
    with tarfile.open(ordered, "w") as tar:
        tar.add(pstree, arcname=f"{names.CHECKPOINT_DIRECTORY}/{pstree.name}")
        with tarfile.open(archive) as original:
            for member in original:
                if member.name != f"{names.CHECKPOINT_DIRECTORY}/{pstree.name}":
                    tar.addfile(member, original.extractfile(member) if member.isfile() else None)
    monkeypatch.setattr(archives, "MAX_CRIU_IMAGE_BYTES", 8 << 20)
    monkeypatch.setattr(archives, "MAX_CRIU_IMAGES_BYTES", pstree.stat().st_size)
    facts = inspect_archive(ordered)
    assert facts.inspection is not None
    assert [p.comm for p in facts.inspection.processes] == ["?", "?", "?"]
    assert f"core-{dump.shell}.img ({(dump.images / f'core-{dump.shell}.img').stat().st_size} bytes)" in facts.inspection.skipped
    assert facts.inspection.problems == (), "what was skipped is not reported missing as well"


def test_an_unreadable_process_tree_is_a_warning_never_a_failed_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    archive = agent_fakes.make_archive(tmp_path / "checkpoint.tar", container="app")
    with tarfile.open(archive, "a") as tar:
        member = tarfile.TarInfo(f"{names.CHECKPOINT_DIRECTORY}/{names.CRIU_PSTREE_IMAGE}")
        member.size = 7
        tar.addfile(member, io.BytesIO(b"garbage"))
    with caplog.at_level(logging.WARNING, logger="node_agent.archives"):
        facts = inspect_archive(archive)
    assert facts.inspection is None
    assert facts.digest is not None and facts.config_dump["name"] == "app"
    assert "could not inspect the CRIU images" in caplog.text and "pstree.img has an unknown magic" in caplog.text


async def test_the_agents_answer_carries_the_inspection_and_the_criu_version(
    agent: Agent, dump: criudump.Dump, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kubelet's archive holds real CRIU images: the answer describes them, and the image is the archive unchanged."""
    plain = agent_fakes.make_archive

    def with_images(path: Path, *, container: str, extra_bytes: int = 300_000) -> Path:
        plain(path, container=container, extra_bytes=extra_bytes)
        with tarfile.open(path, "a") as tar:
            for image in sorted(dump.images.iterdir()):
                tar.add(image, arcname=f"{names.CHECKPOINT_DIRECTORY}/{image.name}")
        return path

    monkeypatch.setattr(agent_fakes, "make_archive", with_images)
    status, body = await agent.call("POST", "/v1/checkpoint", agent.checkpoint_body())
    assert status == 200, body
    (item,) = body["containers"]
    assert item["criu_version"] == "4.1.1"
    assert item["inspection"] == inspect_directory(dump.images).to_json()
    (parsed,) = CheckpointResponse.from_json(body).containers
    inspection = Inspection.from_json(parsed.inspection)
    assert {(p.pid, p.ppid, p.comm) for p in inspection.processes if p.pid != dump.python} == {
        (dump.shell, 0, "sh"), (dump.sleep, dump.shell, "sleep")
    }  # fmt: skip
    assert any(f.path == "/dev/null" for f in inspection.files)
