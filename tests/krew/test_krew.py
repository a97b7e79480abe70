"""kubectl-migrate as krew ships it (krew/), checked with krew's own code.

* the archive is reproducible, and krew/migrate.yaml carries the sha256 of a fresh build of this checkout;
* the zipapp holds the CLI's import closure and pure-Python dependencies, and runs on the standard library alone;
* krew's validator (validate-krew-manifest) and manifestcheck accept the manifest and reject broken ones;
* krew itself (``kubectl krew install --manifest --archive``) installs it into a temporary KREW_ROOT, and the
  installed plugin answers --help, reads PodMigrations from a loopback API server, and runs as ``kubectl migrate``.

krew v0.4.3 and its validator are built from the Go module proxy by krew/validate/build.sh (about 20 s once,
then cached in ~/.cache/podmigrate/krew-v0.4.3/). Without Go these tests skip, except in CI, where they fail.
No cluster: the API server is a stand-in on 127.0.0.1.
"""

from __future__ import annotations

import gzip
import http.server
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from krew import build as krew_build
from localcluster import controlplane, processes

REPO = Path(__file__).resolve().parents[2]
KREW = REPO / "krew"
MANIFEST = KREW / "migrate.yaml"
TOOLS = ("kubectl-krew", "validate-krew-manifest", "manifestcheck")
VERSION = krew_build.project_version()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> krew_build.Built:
    return krew_build.build(tmp_path_factory.mktemp("krew-dist"))


@pytest.fixture(scope="module")
def tools() -> Path:
    if shutil.which("go") is None:
        message = "Go is not on PATH: krew and its manifest validator are built from the Go module proxy"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI must have it", pytrace=False)
        pytest.skip(message)
    return processes.cached_build(script=KREW / "validate" / "build.sh", binaries=TOOLS)


def run(argv: list[str | Path], *, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False
    )


# --- the build ---------------------------------------------------------------------------------------------------


def _without_sha256(manifest: str) -> str:
    return re.sub(r"sha256: [0-9a-f]{64}", "sha256: <pinned at release>", manifest)


def test_the_committed_manifest_is_what_a_build_writes_but_for_the_pinned_sha256(built):
    """The sha256 pins a released archive: `make krew` writes it when a release is cut (`build.py --check` then
    agrees). Between releases every change to a module the CLI imports changes it, so only the rest is held to."""
    committed = MANIFEST.read_text()
    assert _without_sha256(committed) == _without_sha256(built.manifest), "run `make krew` and commit krew/migrate.yaml"
    assert re.search(r"sha256: [0-9a-f]{64}\n", committed)
    assert f"sha256: {built.sha256}\n" in built.manifest
    assert f"/releases/download/v{VERSION}/kubectl-migrate-v{VERSION}.tar.gz\n" in committed
    assert built.archive.name == f"kubectl-migrate-v{VERSION}.tar.gz"


def test_the_build_is_reproducible(built, tmp_path):
    # Another process, hash seed, time zone and umask: the same bytes.
    script = f'umask 077 && exec "$0" {KREW / "build.py"} --out-dir {tmp_path / "dist"} --manifest {tmp_path / "migrate.yaml"}'
    env = {**os.environ, "PYTHONHASHSEED": "4242", "TZ": "Pacific/Kiritimati"}
    result = run(["bash", "-c", script, sys.executable], env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "dist" / built.archive.name)
    assert (tmp_path / "dist" / built.archive.name).read_bytes() == built.archive.read_bytes()
    assert (tmp_path / "dist" / "kubectl-migrate").read_bytes() == built.zipapp.read_bytes()
    assert (tmp_path / "migrate.yaml").read_text() == built.manifest


def test_the_archive_is_one_executable_with_fixed_metadata(built):
    data = built.archive.read_bytes()
    assert data[3] & 0x08 == 0, "no file name in the gzip header"
    assert data[4:8] == b"\0\0\0\0", "no time in the gzip header"
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        [member] = tar.getmembers()
        assert (member.name, member.isfile(), member.mode, member.mtime) == ("kubectl-migrate", True, 0o755, krew_build.TAR_TIME)
        assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "root", "root")
        assert tar.extractfile(member).read() == built.zipapp.read_bytes()


def test_the_zipapp_holds_the_clis_imports_and_pure_python_dependencies(built):
    app = built.zipapp.read_bytes()
    assert app.startswith(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(built.zipapp) as zf:
        infos = zf.infolist()
    names = [i.filename for i in infos]
    assert names == sorted(names)
    assert {i.date_time for i in infos} == {krew_build.ZIP_TIME}
    assert {i.external_attr >> 16 for i in infos} == {0o100644}
    assert {"__main__.py", "migrator/cli/main.py", "migrator/cli/drains.py", "kubeclient/connecting.py"} <= set(names)
    assert {
        "aiohttp/__init__.py",
        "multidict/_multidict_py.py",
        "yaml/__init__.py",
        "kubernetes_asyncio/client/__init__.py",
    } <= set(names)
    assert not [n for n in names if n.endswith((".so", ".pyd", ".pyx", ".c", ".pyi"))], "nothing compiled, no build inputs"
    assert not [n for n in names if n.startswith(("node_agent/", "localcluster/", "tests/"))]
    assert "migrator/service.py" not in names and not [n for n in names if n.startswith("migrator/controllers/")]
    assert not [n for n in names if n.endswith(".dist-info/RECORD")]
    dist_infos = {n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")}
    assert len(dist_infos) == len(krew_build.WHEELS)


def test_the_zipapp_imports_only_from_itself_and_the_standard_library(built):
    # -I -S: no site-packages, no PYTHON* variables: what a user's bare python3 has.
    code = """
import json, sys
sys.path.insert(0, sys.argv[1])
import migrator.cli.main, aiohttp, frozenlist, multidict, propcache, yarl, yaml
files = {name: getattr(m, "__file__", None) or "" for name, m in sys.modules.items()}
print(json.dumps({
    "outside": sorted(n for n, f in files.items() if f and not f.startswith((sys.argv[1], sys.base_prefix, sys.prefix))),
    "ours": sorted(n for n, f in files.items() if f.startswith(sys.argv[1])),
    "multidict": multidict.MultiDict.__module__,
    "libyaml": yaml.__with_libyaml__,
}))
"""
    result = run([sys.executable, "-I", "-S", "-c", code, built.zipapp])
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["outside"] == []
    assert {"migrator.cli.main", "kubernetes_asyncio.client", "aiohttp", "tenacity", "dateutil.parser"} <= set(seen["ours"])
    assert seen["multidict"] == "multidict._multidict_py" and seen["libyaml"] is False


def test_the_closure_follows_every_import_statement(tmp_path):
    def write(path: str, text: str) -> None:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)

    write("one/app/__init__.py", "")
    write("one/app/cli.py", "import json\nfrom . import util\n\n\ndef later():\n    from app.lazy import f\n    import yaml\n")
    write("one/app/util.py", "from .sub import thing\nfrom helper import tool\n")
    write("one/app/sub/__init__.py", "from app.sub.inner import thing\n")
    write("one/app/sub/inner.py", "thing = 1\n")
    write("one/app/lazy.py", "def f():\n    pass\n")
    write("one/app/unused.py", "import requests\n")
    write("two/helper/__init__.py", "def tool():\n    pass\n")
    files, others = krew_build.first_party_closure("app.cli", [tmp_path / "one", tmp_path / "two"])
    assert sorted(files) == [
        "app/__init__.py",
        "app/cli.py",
        "app/lazy.py",
        "app/sub/__init__.py",
        "app/sub/inner.py",
        "app/util.py",
        "helper/__init__.py",
    ]
    assert others == {"json", "yaml"}


def test_an_import_that_is_neither_vendored_nor_standard_stops_the_build(tmp_path, monkeypatch):
    for path, text in {
        "migrator/__init__.py": "",
        "migrator/cli/__init__.py": "",
        "migrator/cli/main.py": "import requests\n",
    }.items():
        (tmp_path / "src" / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / path).write_text(text)
    monkeypatch.setattr(krew_build, "source_roots", lambda: [tmp_path / "src"])
    with pytest.raises(krew_build.BuildError, match="imports requests, which is neither the standard library nor vendored"):
        krew_build.build(tmp_path / "dist")


# --- krew's validation ------------------------------------------------------------------------------------------


def test_krews_validator_accepts_the_manifest(tools):
    result = run([tools / "validate-krew-manifest", "-manifest", MANIFEST, "-skip-install"])
    assert result.returncode == 0, result.stderr
    assert "structural validation OK" in result.stderr and "no overlapping spec.platform[].selector" in result.stderr
    strict = run([tools / "manifestcheck", MANIFEST])
    assert strict.returncode == 0, strict.stderr
    assert 'plugin "migrate" v0.1.0, 1 platform(s)' in strict.stdout


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (("name: migrate", "name: pod-migrate"), 'plugin should be named "migrate", not "pod-migrate"'),
        (("version: v0.1.0", "version: 0.1.0"), "failed to parse plugin version"),
        (("sha256: ", "sha256: 0123"), "`sha256` value 0123"),
        (("    bin: kubectl-migrate\n", ""), "`bin` has to be set"),
        (("key: os", "key: kernel"), 'key "kernel" not supported'),
        (
            ("shortDescription: Live-migrate", 'shortDescription: "two\\nlines" #'),
            "should not have line breaks in short description",
        ),
        (("  caveats:", "  caveat:"), 'unknown field "caveat"'),
    ],
    ids=["name", "version", "sha256", "bin", "selector", "line-break", "misspelt-field"],
)
def test_the_validator_rejects_a_broken_manifest(tools, tmp_path, change, error):
    old, new = change
    text = MANIFEST.read_text()
    assert old in text
    broken = tmp_path / "migrate.yaml"
    broken.write_text(text.replace(old, new, 1))
    result = run(["bash", KREW / "validate.sh", broken])
    assert result.returncode != 0
    assert error in result.stdout + result.stderr


def test_krew_alone_would_let_a_misspelt_field_through(tools, tmp_path):
    """Why manifestcheck exists: krew decodes leniently, so a misspelt optional field is silently dropped."""
    broken = tmp_path / "migrate.yaml"
    broken.write_text(MANIFEST.read_text().replace("  caveats:", "  caveat:", 1))
    assert run([tools / "validate-krew-manifest", "-manifest", broken, "-skip-install"]).returncode == 0
    assert run([tools / "manifestcheck", broken]).returncode == 1


# --- krew's install ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Installed:
    root: Path
    plugin: Path  # $KREW_ROOT/bin/kubectl-migrate, krew's link
    cache: Path  # XDG_CACHE_HOME for the plugin's runs
    output: str


def krew_install(*, tools: Path, manifest: Path, archive: Path, root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KREW_ROOT": str(root), "KREW_NO_UPGRADE_CHECK": "1", "PATH": f"{root / 'bin'}:{os.environ['PATH']}"}
    return run([tools / "kubectl-krew", "install", f"--manifest={manifest}", f"--archive={archive}"], env=env)


@pytest.fixture(scope="module")
def installed(tools: Path, built: krew_build.Built, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    work = tmp_path_factory.mktemp("krew-install")
    manifest = work / "migrate.yaml"  # the manifest build.py wrote for this very archive
    manifest.write_text(built.manifest)
    result = krew_install(tools=tools, manifest=manifest, archive=built.archive, root=work / "krew")
    assert result.returncode == 0, result.stderr
    return Installed(
        root=work / "krew", plugin=work / "krew" / "bin" / "kubectl-migrate", cache=work / "cache", output=result.stderr
    )


def plugin_env(installed: Installed) -> dict[str, str]:
    return {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(installed.cache.parent),
        "XDG_CACHE_HOME": str(installed.cache),
    }


def test_krew_installs_the_archive_as_the_manifest_says(installed, built):
    assert "Installed plugin: migrate" in installed.output
    store = installed.root / "store" / "migrate" / f"v{VERSION}" / "kubectl-migrate"
    assert installed.plugin.is_symlink() and installed.plugin.resolve() == store.resolve()
    assert store.read_bytes() == built.zipapp.read_bytes()
    assert os.access(store, os.X_OK)
    assert (installed.root / "receipts" / "migrate.yaml").is_file()


def test_krew_refuses_an_archive_whose_sha256_differs(tools, built, tmp_path):
    manifest = tmp_path / "migrate.yaml"
    manifest.write_text(built.manifest)
    other = tmp_path / built.archive.name
    other.write_bytes(gzip.compress(gzip.decompress(built.archive.read_bytes()), compresslevel=1, mtime=0))
    result = krew_install(tools=tools, manifest=manifest, archive=other, root=tmp_path / "krew")
    assert result.returncode != 0
    assert "checksum does not match" in result.stderr
    assert not (tmp_path / "krew" / "bin" / "kubectl-migrate").exists()


def test_the_installed_plugin_runs_on_a_bare_python(installed):
    bare = run([sys.executable, "-I", "-S", installed.plugin, "--help"], env=plugin_env(installed))
    assert bare.returncode == 0, bare.stderr
    assert bare.stdout.startswith("usage: kubectl migrate")
    # As krew's link is run: its shebang finds python3 on PATH. The zipapp unpacked itself once for Python's bytecode cache.
    direct = run([installed.plugin, "--help"], env=plugin_env(installed))
    assert direct.returncode == 0, direct.stderr
    assert direct.stdout == bare.stdout
    [unpacked] = (installed.cache / "kubectl-migrate").iterdir()
    assert (unpacked / "migrator" / "cli" / "__pycache__").is_dir()


def test_the_zipapp_runs_from_the_zip_where_it_cannot_unpack(installed, tmp_path):
    readonly = tmp_path / "readonly"
    readonly.mkdir(mode=0o555)
    env = {**plugin_env(installed), "XDG_CACHE_HOME": str(readonly / "cache")}
    if os.geteuid() == 0:  # root writes anywhere: a cache path under a file cannot be made by anyone
        (tmp_path / "file").write_text("")
        env["XDG_CACHE_HOME"] = str(tmp_path / "file" / "cache")
    result = run([sys.executable, "-I", "-S", installed.plugin, "--help"], env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: kubectl migrate")


class FakeApiServer(http.server.ThreadingHTTPServer):
    """Answers the one list call `kubectl migrate get` makes, on 127.0.0.1; remembers what it was asked."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FakeApiHandler)
        self.requests: list[tuple[str, str]] = []
        self.migration: dict[str, Any] = {
            "apiVersion": "podmigrate.io/v1alpha1",
            "kind": "PodMigration",
            "metadata": {"name": "web-move", "namespace": "shop", "creationTimestamp": "2026-01-01T00:00:00Z", "uid": "u1"},
            "spec": {"podName": "web", "targetNode": "node-2"},
            "status": {"phase": "Succeeded", "sourceNode": "node-1", "targetNode": "node-2"},
        }


class FakeApiHandler(http.server.BaseHTTPRequestHandler):
    server: FakeApiServer

    def do_GET(self) -> None:
        self.server.requests.append((self.path, self.headers.get("Authorization", "")))
        if self.path.split("?")[0] == "/apis/podmigrate.io/v1alpha1/namespaces/shop/podmigrations":
            status, body = (
                200,
                {"apiVersion": "podmigrate.io/v1alpha1", "kind": "PodMigrationList", "items": [self.server.migration]},
            )
        else:
            status, body = 404, {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not here"}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def api_server() -> Iterator[FakeApiServer]:
    server = FakeApiServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_the_installed_plugin_reads_migrations_from_an_api_server(installed, api_server, tmp_path):
    host, port = api_server.server_address[:2]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": f"http://{host}:{port}"}}],
                "users": [{"name": "me", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "me", "namespace": "shop"}}],
                "current-context": "fake",
            }
        )
    )
    bare = [sys.executable, "-I", "-S", installed.plugin, "--kubeconfig", kubeconfig, "get"]
    table = run(bare, env=plugin_env(installed), timeout=60)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split() == ["NAME", "POD", "PHASE", "SOURCE", "TARGET", "DOWNTIME", "AGE"]
    assert row.split()[:5] == ["web-move", "web", "Succeeded", "node-1", "node-2"]
    as_yaml = run([*bare, "-o", "yaml"], env=plugin_env(installed), timeout=60)
    assert as_yaml.returncode == 0, as_yaml.stderr
    assert "name: web-move" in as_yaml.stdout and "podName: web" in as_yaml.stdout
    assert api_server.requests and {auth for _, auth in api_server.requests} == {"Bearer t0ken"}


def test_kubectl_installs_it_with_krew_and_runs_it_as_kubectl_migrate(tools, built, tmp_path):
    kubectl = controlplane.ensure_binaries() / "kubectl"  # the local cluster's, built from source and cached by version
    root = tmp_path / "krew"
    manifest = tmp_path / "migrate.yaml"
    manifest.write_text(built.manifest)
    env = {
        "PATH": f"{root / 'bin'}:{tools}:{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "KREW_ROOT": str(root),
        "KREW_NO_UPGRADE_CHECK": "1",
    }
    install = run([kubectl, "krew", "install", f"--manifest={manifest}", f"--archive={built.archive}"], env=env)
    assert install.returncode == 0, install.stderr
    assert "Installed plugin: migrate" in install.stderr
    listed = run([kubectl, "plugin", "list", "--name-only"], env=env)
    assert "kubectl-migrate" in listed.stdout.split()
    helped = run([kubectl, "migrate", "--help"], env=env)
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("usage: kubectl migrate")


def test_a_license_goes_into_the_archive_and_krew_installs_it(tools, tmp_path, monkeypatch):
    # krew-index's validator requires a LICENSE among the installed files; the project has none yet.
    license_file = tmp_path / "LICENSE"
    license_file.write_text("the project's licence\n")
    monkeypatch.setattr(krew_build, "LICENSE", license_file)
    built = krew_build.build(tmp_path / "dist")
    assert "    - from: LICENSE\n      to: .\n" in built.manifest
    manifest = tmp_path / "migrate.yaml"
    manifest.write_text(built.manifest)
    validated = run(["bash", KREW / "validate.sh", manifest, built.archive])
    assert validated.returncode == 0, validated.stderr
    result = krew_install(tools=tools, manifest=manifest, archive=built.archive, root=tmp_path / "krew")
    assert result.returncode == 0, result.stderr
    installed = tmp_path / "krew" / "store" / "migrate" / f"v{VERSION}"
    assert sorted(p.name for p in installed.iterdir()) == ["LICENSE", "kubectl-migrate"]
    assert (installed / "LICENSE").read_text() == "the project's licence\n"
