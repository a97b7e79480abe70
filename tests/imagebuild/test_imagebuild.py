"""Unit tests of the image build: metadata, layers, config, wrappers, the Containerfile. Fast, no registry."""

from __future__ import annotations

import gzip
import json
import os
import re
import stat
import tarfile
import tomllib
from pathlib import Path

import pytest

from imagebuild import build, layers, packages, project, runtime
from imagebuild.__main__ import parse_args
from localcluster.testimages import SYSTEM_PYTHON
from ocicheckpoint import image as oci
from ocicheckpoint import names
from ocicheckpoint.reference import is_loopback

REPO = Path(__file__).resolve().parents[2]
REVISION = project.Revision(commit="a" * 40, short="aaaaaaa", dirty=False, timestamp=1_700_000_000)


def test_project_comes_from_pyproject():
    doc = tomllib.loads((REPO / "pyproject.toml").read_text())
    proj = project.load_project(root=REPO)
    assert proj.version == doc["project"]["version"]
    assert proj.dependencies == tuple(doc["project"]["dependencies"])
    assert not any(dep.startswith(("pytest", "ruff")) for dep in proj.dependencies), "the test extra stays out"
    assert proj.image_scripts() == {name: doc["project"]["scripts"][name] for name in project.IMAGE_SCRIPTS}
    assert any(pattern.startswith("imagebuild") for pattern in doc["tool"]["setuptools"]["packages"]["find"]["include"])


def test_tags_are_version_and_version_commit_with_dirty_marker():
    assert project.default_tags(version="0.1.0", revision=REVISION) == ["0.1.0", "0.1.0-aaaaaaa"]
    dirty = project.Revision(commit="a" * 40, short="aaaaaaa", dirty=True, timestamp=0)
    assert project.default_tags(version="0.1.0", revision=dirty) == ["0.1.0", "0.1.0-aaaaaaa-dirty"]
    assert dirty.label == "a" * 40 + "-dirty"


def test_revision_is_the_checkouts_head():
    rev = project.read_revision(root=REPO)
    assert re.fullmatch(r"[0-9a-f]{40}", rev.commit)
    assert rev.commit.startswith(rev.short)
    assert rev.timestamp > 1_500_000_000


def test_source_files_are_gits_view_of_the_tree():
    files = {str(p) for p in project.source_files(root=REPO)}
    assert "pyproject.toml" in files and "node-agent/node_agent/criu_hook.sh" in files
    assert not any(f.startswith(".venv/") or "__pycache__" in f or ".egg-info" in f for f in files)


def test_wrapper_runs_the_entry_point_with_the_images_python(tmp_path, monkeypatch):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("class cli:\n    @staticmethod\n    def main():\n        return 3\n")
    [wrapper] = packages.write_wrappers(root=tmp_path, scripts={"tool": "pkg:cli.main"}, python=Path("/usr/bin/python3"))
    assert wrapper == tmp_path / "usr/local/bin/tool"
    assert stat.S_IMODE(wrapper.stat().st_mode) == 0o755
    text = wrapper.read_text()
    assert text.startswith("#!/usr/bin/python3\n") and "from pkg import cli\n" in text
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SystemExit) as exited:
        exec(compile(text, str(wrapper), "exec"), {})
    assert exited.value.code == 3


def test_wrapper_rejects_an_entry_point_without_a_function():
    with pytest.raises(ValueError):
        packages.wrapper_script(entry_point="node_agent.main")


def test_a_foreign_pip_is_told_the_images_interpreter():
    args = packages.target_args(version="3.11.2", glibc_minor=36, machine="x86_64")
    text = " ".join(args)
    assert "--implementation cp" in text and "--python-version 3.11" in text and "--abi cp311" in text
    assert "--platform manylinux2014_x86_64" in text and "--platform manylinux_2_36_x86_64" in text
    assert "manylinux_2_37" not in text


def test_stdlib_copy_leaves_out_tests_tk_and_what_pulls_big_libraries():
    skipped = set(runtime._stdlib_ignore("/usr/lib/python3.11", ["test", "tkinter", "asyncio", "config-3.11-x86_64-linux-gnu"]))
    assert skipped == {"test", "tkinter", "config-3.11-x86_64-linux-gnu"}
    dynload = ["_ssl.cpython-311-x86_64-linux-gnu.so", "_testcapi.cpython-311-x86_64-linux-gnu.so", "nis.cpython-311.so"]
    dynload += ["_ctypes.cpython-311-x86_64-linux-gnu.so", "readline.cpython-311-x86_64-linux-gnu.so"]
    skipped = set(runtime._stdlib_ignore("/usr/lib/python3.11/lib-dynload", dynload))
    assert skipped == {dynload[1], dynload[2], dynload[4]}


def test_libraries_are_copied_once_and_bundled_ones_not_at_all(tmp_path):
    copied = runtime.copy_libraries(root=tmp_path, binaries=[SYSTEM_PYTHON.resolve()])
    libc = next(lib for lib in copied if lib.name.startswith("libc.so"))
    assert runtime.image_path(tmp_path, libc).is_file()
    assert runtime.copy_libraries(root=tmp_path, binaries=[SYSTEM_PYTHON.resolve()]) == []
    assert runtime.copy_libraries(root=tmp_path / "other", binaries=[SYSTEM_PYTHON.resolve()], present=copied) == []


def _tree(root: Path, *, umask: int) -> Path:
    old = os.umask(umask)
    try:
        (root / "usr/bin").mkdir(parents=True)
        (root / "usr/bin/tool").write_text("#!/bin/sh\n")
        (root / "usr/bin/tool").chmod(0o777 & ~umask)
        (root / "usr/lib").mkdir()
        (root / "usr/lib/data").write_text("x" * 1000)
        (root / "usr/lib/link").symlink_to("data")
        (root / "tmp").mkdir()
        (root / "tmp").chmod(0o1777)
    finally:
        os.umask(old)
    os.utime(root / "usr/lib/data", (1, 1 if umask else 2))
    return root


def test_layers_are_reproducible_whatever_the_umask_and_mtimes(tmp_path):
    first = layers.build_layer(name="a", rootfs=_tree(tmp_path / "one", umask=0o022), work=tmp_path)
    second = layers.build_layer(name="b", rootfs=_tree(tmp_path / "two", umask=0o002), work=tmp_path)
    assert first.descriptor.digest == second.descriptor.digest
    assert first.diff_id == second.diff_id and first.diff_id != first.descriptor.digest
    assert first.descriptor.media_type == names.MEDIA_TYPE_OCI_LAYER_GZIP
    raw = first.path.read_bytes()
    assert raw[4:8] == b"\0\0\0\0", "no time in the gzip header"
    assert oci.sha256_bytes(gzip.decompress(raw)) == first.diff_id
    with tarfile.open(first.path, "r:gz") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert all(m.uid == 0 and m.gid == 0 and m.mtime == 0 and not m.uname for m in members)
    modes = {m.name: stat.S_IMODE(m.mode) for m in members if not m.issym()}
    assert modes == {
        "tmp": 0o1777,
        "usr": 0o755,
        "usr/bin": 0o755,
        "usr/bin/tool": 0o755,
        "usr/lib": 0o755,
        "usr/lib/data": 0o644,
    }


def _layer(name: str, n: int) -> layers.Layer:
    desc = oci.Descriptor(media_type=names.MEDIA_TYPE_OCI_LAYER_GZIP, digest=f"sha256:{n:064x}", size=n)
    return layers.Layer(name=name, path=Path(name), descriptor=desc, diff_id=f"sha256:{n + 100:064x}", uncompressed_size=n * 3)


def test_config_runs_as_nonroot_with_the_documented_environment_and_labels():
    proj = project.load_project(root=REPO)
    image = build.describe(project=proj, revision=REVISION, built=[_layer("runtime", 1), _layer("podmigrate", 2)])
    config = json.loads(image.config_bytes)
    assert config["config"]["User"] == "65532:65532"
    assert {"PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"} <= set(config["config"]["Env"])
    assert config["config"]["Env"][0].startswith("PATH=/usr/local/bin:")
    assert config["config"]["Labels"]["org.opencontainers.image.version"] == proj.version
    assert config["config"]["Labels"]["org.opencontainers.image.revision"] == REVISION.commit
    assert config["created"] == "2023-11-14T22:13:20Z", "the commit's time, not the build's"
    assert config["rootfs"]["diff_ids"] == [f"sha256:{101:064x}", f"sha256:{102:064x}"]
    manifest = oci.parse_manifest(image.manifest_bytes)
    assert [layer.size for layer in manifest.layers] == [1, 2]
    assert manifest.config.digest == oci.sha256_bytes(image.config_bytes) == image.config.digest
    assert image.compressed_size == 3 + image.config.size
    assert image.manifest_digest == oci.sha256_bytes(image.manifest_bytes)


def test_system_files_have_root_and_nonroot_and_a_sticky_tmp(tmp_path):
    runtime.system_files(root=tmp_path)
    assert "nonroot:x:65532:65532:" in (tmp_path / "etc/passwd").read_text()
    assert "nonroot:x:65532:" in (tmp_path / "etc/group").read_text()
    assert stat.S_IMODE((tmp_path / "tmp").stat().st_mode) == 0o1777


@pytest.mark.parametrize(("registry", "loopback"), [("127.0.0.1:5310", True), ("localhost:5000", True), ("ghcr.io", False)])
def test_loopback_registries_get_plain_http(registry, loopback):
    assert is_loopback(registry) is loopback


def test_cli_defaults():
    args = parse_args(["--registry", "127.0.0.1:5310"])
    assert (args.repository, args.tags, args.refresh, args.no_bytecode) == ("podmigrate", None, False, False)


# --- the Containerfile builds the same image with an engine -------------------------------


def _stages(text: str) -> list[str]:
    return re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]


def test_containerfile_is_multi_stage_and_its_final_stage_matches_the_built_config():
    text = (REPO / "Containerfile").read_text()
    stages = _stages(text)
    assert len(stages) == 2 and "python:3.11-slim-bookworm" in text
    final = stages[-1]
    assert "USER 65532:65532" in final and "COPY --from=build /install /usr/local" in final
    assert not re.search(r"\b(gcc|build-essential|apt-get install)\b", final), "no compilers in the final stage"
    assert "PYTHONDONTWRITEBYTECODE=1" in final and "PYTHONUNBUFFERED=1" in final
    for key in build.labels(project=project.load_project(root=REPO), revision=REVISION):
        assert key in final
    assert "--only-binary=:all:" in stages[0], "wheels only: the build stage needs no compiler either"
    assert json.dumps(list(build.DEFAULT_CMD)) in final


def test_build_context_ignore_files_agree_and_keep_every_package():
    ignore = (REPO / ".containerignore").read_text()
    assert ignore == (REPO / ".dockerignore").read_text()
    doc = tomllib.loads((REPO / "pyproject.toml").read_text())
    kept = {line[1:] for line in ignore.splitlines() if line.startswith("!")}
    assert "pyproject.toml" in kept
    for pattern in doc["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        assert package in kept or ("node-agent" in kept and (REPO / "node-agent" / package).is_dir()), package


def test_makefile_has_the_image_target():
    text = (REPO / "Makefile").read_text()
    assert re.search(r"^\.PHONY:.*\bimage\b", text, flags=re.MULTILINE)
    assert re.search(r"^image: venv\n\t\$\(PY\) -m imagebuild --registry ", text, flags=re.MULTILINE)
