"""Build ``kubectl-migrate`` as krew ships it: one zipapp file in a release tar.gz, and krew/migrate.yaml.

What is in the zipapp (a shebang line ``#!/usr/bin/env python3`` and a zip, as ``python3 -m zipapp``
makes them; zipimport runs it):

* ``__main__.py`` (krew/zipapp_main.py: refuses Python < 3.11 in one line, unpacks the zipapp once into
  the user's cache so that Python can keep bytecode, then runs ``migrator.cli.main``);
* podmigrate's own modules that the CLI imports, found by reading their import statements (all of
  them, also those inside functions) from ``migrator.cli.main`` on; never the controller or agents;
* the CLI's third-party dependencies, vendored from the pinned wheels below (but ``OPTIONAL_IMPORTS``). aiohttp, multidict,
  yarl, frozenlist and propcache have C accelerators, but each publishes an official pure-Python
  wheel (py3-none-any) and falls back to its pure-Python implementation without them; PyYAML has
  no such wheel, so its Python files are taken from one platform wheel and its ``_yaml`` extension
  is left out (``yaml`` then runs without libyaml, as it does wherever libyaml is missing). Nothing
  compiled goes in, so the one archive runs on every OS and architecture with python3 >= 3.11
  (krew cannot run it on Windows: it installs ``bin`` as a command, and a zipapp needs a shebang).
  Each wheel's dist-info (its METADATA and licence files) goes in with it, without RECORD.

Determinism: the bytes depend only on the committed sources, the wheels (pinned by sha256, cached
under ``$PODMIGRATE_CACHE/krew/wheels``) and this script: entries are sorted, every timestamp is
1980-01-01, modes are fixed (0644 in the zip, 0755 for the tar's one file), owners are root, the
gzip header has no name and no time. Compression is the zlib Python links (Debian's on every
machine of this project); a different zlib could compress to other bytes, which --check and
tests/krew would report as a stale manifest.

The archive holds the zipapp, and the project's LICENSE once it has one (krew-index requires it).

    python krew/build.py            # writes krew/dist/{kubectl-migrate,kubectl-migrate-v<version>.tar.gz}, krew/migrate.yaml
    python krew/build.py --check    # builds in a temporary directory; exit 1 if krew/migrate.yaml differs
    python krew/build.py --out-dir DIR --manifest FILE   # elsewhere (the tests)
"""

from __future__ import annotations

import argparse
import ast
import gzip
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

KREW: Final = Path(__file__).resolve().parent
ROOT: Final = KREW.parent
MANIFEST: Final = KREW / "migrate.yaml"
MAIN: Final = KREW / "zipapp_main.py"
LICENSE: Final = ROOT / "LICENSE"
ENTRY: Final = "migrator.cli.main"
BIN: Final = "kubectl-migrate"
PLUGIN: Final = "migrate"
REPOSITORY: Final = "https://github.com/podmigrate/podmigrate"
SHEBANG: Final = b"#!/usr/bin/env python3\n"
ZIP_TIME: Final = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can have
TAR_TIME: Final = 315532800  # the same instant, 1980-01-01T00:00:00Z
CACHE_ROOT: Final = Path(os.environ.get("PODMIGRATE_CACHE", Path.home() / ".cache" / "podmigrate"))

# How pip is told which file to fetch: a pure-Python wheel, or (PyYAML) one platform's wheel whose .py files are used.
PURE: Final = ("--platform", "any", "--implementation", "py", "--abi", "none", "--python-version", "3.11")
CPYTHON_LINUX: Final = (
    "--platform",
    "manylinux_2_17_x86_64",
    "--implementation",
    "cp",
    "--abi",
    "cp311",
    "--python-version",
    "3.11",
)
# Compiled code and build inputs never go into the zipapp, nor type stubs or the libraries' own tests.
LEFT_OUT_SUFFIXES: Final = (".so", ".pyd", ".dylib", ".c", ".h", ".pyx", ".pxd", ".pxi", ".pyi", "_test.py")
LICENSE_NAMES: Final = ("license", "licence", "copying", "notice")
# Third-party packages the CLI imports only for one feature, never vendored: compiled, so the one pure-Python
# archive cannot carry them. cryptography decrypts checkpoint images for `inspect --from-registry
# --decryption-key` (imported only then; without it the CLI says `pip install cryptography` in one line).
OPTIONAL_IMPORTS: Final = frozenset({"cryptography"})


@dataclass(frozen=True)
class Wheel:
    requirement: str
    filename: str
    sha256: str
    select: tuple[str, ...] = PURE


# The versions this project's venv resolved and tests with (pyproject's dependencies, kubectl-migrate's part).
# certifi is a dependency of kubernetes_asyncio that nothing here imports (TLS uses the kubeconfig's CA).
WHEELS: Final = (
    Wheel(
        "aiohappyeyeballs==2.7.1",
        "aiohappyeyeballs-2.7.1-py3-none-any.whl",
        "9243213661e29250eb41368e5daa826fc017156c3b8a11440826b2e3ed376472",
    ),
    Wheel(
        "aiohttp==3.14.5",
        "aiohttp-3.14.5-py3-none-any.whl",
        "efc21a454892828368b11c2c780de0ff8bc991f73f6b99c6b66e56205470929b",
    ),
    Wheel(
        "aiosignal==1.4.0",
        "aiosignal-1.4.0-py3-none-any.whl",
        "053243f8b92b990551949e63930a839ff0cf0b0ebbe0597b0f3fb19e1a0fe82e",
    ),
    Wheel(
        "attrs==26.1.0",
        "attrs-26.1.0-py3-none-any.whl",
        "c647aa4a12dfbad9333ca4e71fe62ddc36f4e63b2d260a37a8b83d2f043ac309",
    ),
    Wheel(
        "frozenlist==1.8.0",
        "frozenlist-1.8.0-py3-none-any.whl",
        "0c18a16eab41e82c295618a77502e17b195883241c563b00f0aa5106fc4eaa0d",
    ),
    Wheel(
        "idna==3.20",
        "idna-3.20-py3-none-any.whl",
        "ab7ae7122974553370f0bdb919e1a960b2cd1bc1ef0276416d896db81c14582c",
    ),
    Wheel(
        "kubernetes_asyncio==36.1.0",
        "kubernetes_asyncio-36.1.0-py3-none-any.whl",
        "6d25915d1abff24fceda551a502208d986f674d72586297aa58bc7d55e7feaf3",
    ),
    Wheel(
        "multidict==7.2.1",
        "multidict-7.2.1-py3-none-any.whl",
        "08ea94663d9e7c25d14d78222f7aee906c472d4837766bec62477c38f6e419dc",
    ),
    Wheel(
        "propcache==0.5.4",
        "propcache-0.5.4-py3-none-any.whl",
        "62c60aec739ed00124573cce1178138fd690c7676352d67a37328c1cf51d7468",
    ),
    Wheel(
        "python-dateutil==4.0.0",
        "python_dateutil-4.0.0-py3-none-any.whl",
        "a5e246f79eb80475e691bf93862cead98decd8a498cf53ba0516fcdc0f50dc1c",
    ),
    Wheel(
        "PyYAML==6.0.4",
        "pyyaml-6.0.4-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl",
        "622aa875fa6533f25fedcffe23079357d65a690d462200afed5d8e9d0e01ebee",
        select=CPYTHON_LINUX,
    ),
    Wheel(
        "six==1.17.0",
        "six-1.17.0-py2.py3-none-any.whl",
        "4721f391ed90541fddacab5acf947aa0d3dc7d27b2e1e8eda2be8970586c3274",
    ),
    Wheel(
        "tenacity==9.2.1",
        "tenacity-9.2.1-py3-none-any.whl",
        "9e56f17539296baab7beabb08b92f6ee3d7be92d8be72d763360677c2ad6580e",
    ),
    Wheel(
        "typing_extensions==4.16.0",
        "typing_extensions-4.16.0-py3-none-any.whl",
        "481caa481374e813c1b176ada14e97f1f67a4539ce9cfeb3f350d78d6370c2e8",
    ),
    Wheel(
        "urllib3==2.8.0",
        "urllib3-2.8.0-py3-none-any.whl",
        "0cf3cae568d36aa9576b28dfb35f11328f1cb974ca7647d9475ebb86c75ac6e3",
    ),
    Wheel(
        "yarl==1.25.1",
        "yarl-1.25.1-py3-none-any.whl",
        "681c758b0490f9e96b78e5fa8e8dc6e648e9185bb6eaebe73183c33ea0c445f3",
    ),
)

MANIFEST_TEMPLATE: Final = """\
# kubectl-migrate's krew plugin manifest. Generated by krew/build.py (make krew): do not edit by hand.
# sha256 is that of {archive}, built from this commit's sources by `make krew`.
apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: {plugin}
spec:
  version: {tag}
  homepage: {repository}
  shortDescription: Live-migrate running pods between nodes (CRIU checkpoints)
  description: |
    Moves running pods to another node without losing their in-memory state:
    the pod is checkpointed with CRIU, the checkpoint travels as an OCI image,
    and the pod is restored on the target node. `kubectl migrate pod NAME --to NODE`
    asks for one move; `kubectl migrate drain NODE` empties a node that way;
    `get`, `describe` and `timeline` show how the moves went.
    `kubectl migrate checkpoint POD` keeps a pod's checkpoint in the registry
    (once, or on a schedule); `restore` starts a pod from one, `checkpoints`
    lists them and `inspect` shows what one holds.
  caveats: |
    kubectl-migrate is a Python program: it needs python3 (3.11 or newer) on PATH.
    The cluster needs podmigrate installed (the PodMigration and NodeDrain CRDs,
    its controller and node agents); see {repository}.
  platforms:
  - selector:
      matchExpressions:
      - key: os
        operator: In
        values:
        - darwin
        - linux
    uri: {repository}/releases/download/{tag}/{archive}
    sha256: {sha256}
    bin: {bin}
    files:
    - from: {bin}
      to: .
{license}"""


class BuildError(Exception):
    """The build cannot go on; the message says why."""


def project_version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def source_roots() -> list[Path]:
    """Where podmigrate's packages live: pyproject's ``[tool.setuptools.packages.find] where``."""
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    return [(ROOT / where).resolve() for where in found["where"]]


def archive_name(version: str) -> str:
    return f"{BIN}-v{version}.tar.gz"


# --- podmigrate's own modules: the CLI's import closure ---------------------------------------------------------


def module_file(name: str, roots: Iterable[Path]) -> tuple[Path, Path] | None:
    """(source root, file) of a podmigrate module or package, or None when it is not one of ours."""
    for root in roots:
        base = root.joinpath(*name.split("."))
        for candidate in (base / "__init__.py", base.with_suffix(".py")):
            if candidate.is_file():
                return root, candidate
    return None


def _imports(tree: ast.AST, *, module: str, is_package: bool) -> Iterator[tuple[str, bool]]:
    """(module name, must exist) for every import statement, relative ones resolved."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, True
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                parts = package[: len(package) - (node.level - 1)]
                base = ".".join([*parts, node.module] if node.module else parts)
            else:
                base = node.module or ""
            yield base, True
            for alias in node.names:  # `from package import module`: the name may be a submodule, or not
                yield f"{base}.{alias.name}", False


def first_party_closure(entry: str, roots: list[Path]) -> tuple[dict[str, Path], set[str]]:
    """The podmigrate files ``entry`` needs (zip path -> file) and the other top-level modules it imports."""
    ours = {path.parent.name if path.name == "__init__.py" else path.stem for root in roots for path in _tops(root)}
    files: dict[str, Path] = {}
    others: set[str] = set()
    seen: set[str] = set()
    queue = [entry]
    while queue:
        name = queue.pop()
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a, a.b and a.b.c
            module = ".".join(parts[:depth])
            if module in seen:
                continue
            seen.add(module)
            found = module_file(module, roots)
            if found is None:
                raise BuildError(f"{name} is imported but there is no module {module} under {', '.join(map(str, roots))}")
            root, path = found
            files[path.relative_to(root).as_posix()] = path
            tree = ast.parse(path.read_bytes(), filename=str(path))
            for imported, must_exist in _imports(tree, module=module, is_package=path.name == "__init__.py"):
                top = imported.split(".")[0]
                if top not in ours:
                    if must_exist:
                        others.add(top)
                elif must_exist or module_file(imported, roots) is not None:
                    queue.append(imported)
    return files, others


def _tops(root: Path) -> Iterator[Path]:
    for child in root.iterdir():
        if (child / "__init__.py").is_file():
            yield child / "__init__.py"
        elif child.suffix == ".py" and child.is_file():
            yield child


# --- the vendored wheels ---------------------------------------------------------------------------------------


def wheel_cache() -> Path:
    return CACHE_ROOT / "krew" / "wheels"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_wheels(cache: Path) -> dict[Wheel, Path]:
    """Every pinned wheel in the cache, checked against its sha256; pip fetches the missing ones (hash-checked too)."""
    cache.mkdir(parents=True, exist_ok=True)
    missing = [w for w in WHEELS if not (cache / w.filename).is_file() or sha256_of(cache / w.filename) != w.sha256]
    for select in sorted({w.select for w in missing}):
        group = [w for w in missing if w.select == select]
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            requirements = Path(tmp) / "requirements.txt"
            requirements.write_text("".join(f"{w.requirement} --hash=sha256:{w.sha256}\n" for w in group))
            print(f"build.py: fetching {', '.join(w.requirement for w in group)} with pip", file=sys.stderr)
            pip = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-input"]
            pip += ["--no-deps", "--only-binary=:all:", "--require-hashes", *select, "--dest", tmp, "-r", str(requirements)]
            result = subprocess.run(pip, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise BuildError(f"pip download failed:\n{result.stdout}{result.stderr}")
            for w in group:
                got = Path(tmp) / w.filename
                if not got.is_file() or sha256_of(got) != w.sha256:
                    raise BuildError(f"pip did not fetch {w.filename} with sha256 {w.sha256} (got {sorted(os.listdir(tmp))})")
                os.replace(got, cache / w.filename)
    return {w: cache / w.filename for w in WHEELS}


def vendored_files(wheel: Wheel, path: Path) -> dict[str, bytes]:
    """The zip entries a wheel contributes: its Python packages and modules, and its dist-info without RECORD."""
    entries: dict[str, bytes] = {}
    with zipfile.ZipFile(path) as whl:
        for info in whl.infolist():
            name = info.filename
            if info.is_dir() or name.endswith(LEFT_OUT_SUFFIXES):
                continue
            top, _, rest = name.partition("/")
            if top.endswith(".data"):
                raise BuildError(f"{wheel.filename} has a .data directory ({name}): not handled")
            if top.endswith(".dist-info"):
                if rest != "RECORD":
                    entries[name] = whl.read(info)
            elif rest or name.endswith(".py"):  # a package's file, or a top-level module; not a stray README or LICENSE
                entries[name] = whl.read(info)
    if not any(
        n.partition("/")[0].endswith(".dist-info") and n.rsplit("/", 1)[-1].lower().startswith(LICENSE_NAMES) for n in entries
    ):
        raise BuildError(f"{wheel.filename} has no licence file in its dist-info: the zipapp must carry one")
    return entries


def top_level_names(entries: Iterable[str]) -> set[str]:
    tops = {name.partition("/")[0] for name in entries}
    return {top.removesuffix(".py") for top in tops if not top.endswith(".dist-info")}


# --- the archives ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    zipapp: Path
    archive: Path
    sha256: str
    manifest: str
    files: int


def zipapp_bytes(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    out.write(SHEBANG)
    with zipfile.ZipFile(out, "w") as zf:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, so external_attr's high half is a mode
            info.external_attr = (0o100644 & 0xFFFF) << 16
            zf.writestr(info, entries[name], compresslevel=9)
    return out.getvalue()


def tar_gz_bytes(members: dict[str, tuple[bytes, int]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(members):
            data, mode = members[name]
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, TAR_TIME
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=9, mtime=0) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def render_manifest(*, version: str, sha256: str, license_file: str | None = None) -> str:
    return MANIFEST_TEMPLATE.format(
        archive=archive_name(version),
        plugin=PLUGIN,
        tag=f"v{version}",
        repository=REPOSITORY,
        sha256=sha256,
        bin=BIN,
        license=f"    - from: {license_file}\n      to: .\n" if license_file else "",
    )


def build(out_dir: Path, *, cache: Path | None = None) -> Built:
    """Build the zipapp and the release archive into ``out_dir``; the manifest text is returned, not written."""
    roots = source_roots()
    ours, imported = first_party_closure(ENTRY, roots)
    entries: dict[str, bytes] = {name: path.read_bytes() for name, path in ours.items()}
    entries["__main__.py"] = MAIN.read_bytes()
    for wheel, path in ensure_wheels(cache or wheel_cache()).items():
        for name, data in vendored_files(wheel, path).items():
            if name in entries:
                raise BuildError(f"{name} comes from {wheel.filename} and from something else")
            entries[name] = data
    missing = sorted(imported - top_level_names(entries) - sys.stdlib_module_names - {"__future__"} - OPTIONAL_IMPORTS)
    if missing:
        raise BuildError(f"kubectl-migrate imports {', '.join(missing)}, which is neither the standard library nor vendored")

    version = project_version()
    out_dir.mkdir(parents=True, exist_ok=True)
    app = zipapp_bytes(entries)
    zipapp = out_dir / BIN
    zipapp.write_bytes(app)
    zipapp.chmod(0o755)
    archive = out_dir / archive_name(version)
    members = {BIN: (app, 0o755)}
    if LICENSE.is_file():
        members[LICENSE.name] = (LICENSE.read_bytes(), 0o644)
    archive.write_bytes(tar_gz_bytes(members))
    sha256 = sha256_of(archive)
    license_file = LICENSE.name if LICENSE.is_file() else None
    return Built(
        zipapp=zipapp,
        archive=archive,
        sha256=sha256,
        manifest=render_manifest(version=version, sha256=sha256, license_file=license_file),
        files=len(entries),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="krew/build.py", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out-dir", type=Path, default=KREW / "dist", help="for the zipapp and the archive (default krew/dist)")
    parser.add_argument(
        "--manifest", type=Path, default=MANIFEST, help="the manifest to write or check (default krew/migrate.yaml)"
    )
    parser.add_argument("--check", action="store_true", help="build in a temporary directory; exit 1 if the manifest is stale")
    args = parser.parse_args(argv)
    try:
        if args.check:
            with tempfile.TemporaryDirectory() as tmp:
                built = build(Path(tmp))
            committed = args.manifest.read_text() if args.manifest.is_file() else ""
            if committed != built.manifest:
                print(
                    f"build.py: {args.manifest} does not match a fresh build (whose archive's sha256 is {built.sha256}): "
                    "run `make krew` and commit krew/migrate.yaml",
                    file=sys.stderr,
                )
                return 1
            print(f"build.py: {args.manifest} matches a fresh build (sha256 {built.sha256})", file=sys.stderr)
            return 0
        built = build(args.out_dir)
    except BuildError as exc:
        print(f"build.py: {exc}", file=sys.stderr)
        return 1
    args.manifest.write_text(built.manifest)
    size = built.archive.stat().st_size
    print(f"build.py: {built.zipapp} ({built.files} files) in {built.archive} ({size} bytes)", file=sys.stderr)
    print(f"build.py: wrote {args.manifest} (sha256 {built.sha256})", file=sys.stderr)
    print(built.archive)  # the last stdout line: the archive, for `make krew`
    return 0


if __name__ == "__main__":
    sys.exit(main())
