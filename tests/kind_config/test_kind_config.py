"""kind-config/: the kind cluster recipe, checked as far as this machine allows (no Docker here).

What runs where (kind-config/README.md says the same for users):

* pure checks (no tools): the scripts parse (``bash -n``; shellcheck where installed), the address plan
  has no private range, the pieces agree with each other and with the project (versions, paths, the
  registry's name), the overlay script and the node image's build context;
* with Go (the Go module proxy or a warm module cache): kind's own config loader and validator on
  ``cluster.yaml``, the kubeadm configuration kind generates from it and the containerd configuration
  its patches make (``kind-config/validate``), broken variants rejected, that containerd config read
  by the real nodes' containerd 2.3.7, and kind's CLI built. Without Go these skip, except in CI
  (``CI=true``), where they fail;
* with the local cluster: the kind overlay through the real API server's server-side dry run.

Not in the suite: creating the cluster and a migration on it (kind needs Docker or podman and a node
image; kindest/node cannot be pulled here; it was run once by hand with podman and a node image made
from the real nodes' parts: kind-config/README.md), and building node-image/Dockerfile (its base
images cannot be pulled).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
KIND = REPO / "kind-config"
CLUSTER_YAML = KIND / "cluster.yaml"
SCRIPTS = sorted([*KIND.glob("*.sh"), *(KIND / "node-image").glob("*.sh")])
CACHE = Path(os.environ.get("PODMIGRATE_CACHE", Path.home() / ".cache" / "podmigrate"))
PRIVATE = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]
REGISTRY = "podmigrate-registry:5000"
DIGEST = "sha256:" + "ab" * 32


def need(tool: str, why: str) -> str:
    """The tool's path; skips without it, except in CI, which must have it."""
    found = shutil.which(tool) or shutil.which(tool, path="/usr/local/go/bin")
    if found is None:
        message = f"{tool} not found ({why})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI must have it", pytrace=False)
        pytest.skip(message)
    return found


def run(argv: list[str | Path], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False, timeout=900, **kw)


def modver(go_mod: Path, module: str) -> str:
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", go_mod.read_text(), re.M)
    assert match, f"{module} not in {go_mod}"
    return match.group(1)


def cluster_config() -> dict[str, Any]:
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    assert isinstance(config, dict)
    return config


def default_node_subnet() -> str:
    match = re.search(r"KIND_NODE_SUBNET:-([0-9./]+)\}", (KIND / "kind-up.sh").read_text())
    assert match, "kind-up.sh has no KIND_NODE_SUBNET default"
    return match.group(1)


# ---------------------------------------------------------------- pure checks


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(KIND)))
def test_scripts_parse_and_are_strict(script: Path) -> None:
    assert run(["bash", "-n", script]).returncode == 0
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert os.access(script, os.X_OK), f"{script} is not executable"


def test_scripts_pass_shellcheck() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    result = run(["shellcheck", "-x", *SCRIPTS], cwd=KIND)
    assert result.returncode == 0, result.stdout


def test_the_address_plan_has_no_private_range() -> None:
    networking = cluster_config()["networking"]
    ranges = {
        "pods": ipaddress.ip_network(networking["podSubnet"]),
        "services": ipaddress.ip_network(networking["serviceSubnet"]),
        "nodes": ipaddress.ip_network(default_node_subnet()),
    }
    for what, net in ranges.items():
        assert not any(net.overlaps(p) for p in PRIVATE), f"{what} {net} is private"
    names = list(ranges)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not ranges[a].overlaps(ranges[b]), f"{a} and {b} overlap"
    assert networking["ipFamily"] == "ipv4"
    assert ipaddress.ip_address(networking["apiServerAddress"]).is_loopback


@pytest.mark.parametrize(
    ("cidr", "private"),
    [
        ("10.244.0.0/16", True),
        ("10.96.0.0/12", True),
        ("172.18.0.0/16", True),
        ("172.31.255.0/24", True),
        ("192.168.1.0/24", True),
        ("0.0.0.0/0", True),
        ("100.65.0.0/24", False),
        ("169.254.240.0/24", False),
        ("172.15.0.0/16", False),
        ("172.32.0.0/16", False),
        ("not-a-cidr", True),
    ],
)
def test_kind_up_refuses_private_node_networks(cidr: str, private: bool) -> None:
    """kind-up.sh's own check (is_private_cidr) agrees with the ipaddress module."""
    function = re.search(r"^is_private_cidr\(\) \{.*?^\}", (KIND / "kind-up.sh").read_text(), re.M | re.S)
    assert function
    result = run(["bash", "-c", f'{function.group(0)}\nis_private_cidr "$1"', "-", cidr])
    assert (result.returncode == 0) is private, result


def test_cluster_yaml_asks_for_checkpoints_restores_and_two_workers() -> None:
    config = cluster_config()
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["featureGates"] == {"ContainerCheckpoint": True}
    roles = [n["role"] for n in config["nodes"]]
    assert roles.count("control-plane") == 1 and roles.count("worker") == 2
    patches = [tomllib.loads(p) for p in config["containerdConfigPatches"]]
    by_version = {p["version"]: p for p in patches}
    v2 = by_version[2]["plugins"]["io.containerd.grpc.v1.cri"]
    v3 = by_version[3]["plugins"]
    for runtime in (v2, v3["io.containerd.cri.v1.runtime"]):
        assert runtime["enable_criu"] is True and runtime["enable_experimental_restore_via_create"] is True
    for images in (v2, v3["io.containerd.cri.v1.images"]):
        assert images["registry"]["config_path"] == "/etc/containerd/certs.d"
    kubelet = yaml.safe_load(config["kubeadmConfigPatches"][0])
    assert kubelet == {"kind": "KubeletConfiguration", "serverTLSBootstrap": True, "failCgroupV1": False}


def test_the_pieces_agree_on_versions_paths_and_the_registry() -> None:
    dockerfile = (KIND / "node-image" / "Dockerfile").read_text()
    k8s = modver(REPO / "localcluster" / "k8s-binaries" / "go.mod", "k8s.io/kubernetes")
    assert f"ARG KIND_NODE_IMAGE=docker.io/kindest/node:{k8s}\n" in dockerfile
    # CRIU: the version the real nodes build (install-deps.sh), from the same tarball.
    criu = re.search(r"^CRIU_VERSION=(\S+)", (REPO / "localcluster" / "install-deps.sh").read_text(), re.M)
    assert criu and f"ARG CRIU_VERSION={criu.group(1)}\n" in dockerfile
    assert f"criu_{criu.group(1)}.orig.tar.xz" in dockerfile
    # The hook where runc.conf says it is.
    runc_conf = [line for line in (KIND / "node-image" / "runc.conf").read_text().splitlines() if not line.startswith("#")]
    assert runc_conf == [
        "tcp-close", "skip-in-flight", "network-lock skip", "action-script /usr/local/libexec/podmigrate/criu_hook.sh"
    ]  # fmt: skip
    assert "COPY criu_hook.sh /usr/local/libexec/podmigrate/criu_hook.sh\n" in dockerfile
    assert "COPY runc.conf /etc/criu/runc.conf\n" in dockerfile
    # One registry name: the container kind-up.sh runs, containerd's hosts.toml, the overlay.
    assert re.search(r"^registry=podmigrate-registry\b", (KIND / "kind-up.sh").read_text(), re.M)
    assert f"COPY hosts.toml /etc/containerd/certs.d/{REGISTRY}/hosts.toml\n" in dockerfile
    hosts = tomllib.loads((KIND / "node-image" / "hosts.toml").read_text())
    assert hosts["server"] == f"http://{REGISTRY}" and f"http://{REGISTRY}" in hosts["host"]
    config = yaml.safe_load((KIND / "overlay" / "config.yaml").read_text())
    assert config["data"] == {"CHECKPOINT_REPOSITORY": f"{REGISTRY}/podmigrate-checkpoints"}
    assert REGISTRY in (KIND / "overlay" / "kustomization.yaml").read_text()


def test_a_cached_criu_tarball_matches_the_dockerfiles_checksum() -> None:
    tarball = CACHE / "src" / "criu_4.2.1.orig.tar.xz"
    if not tarball.exists():
        pytest.skip(f"{tarball} not fetched (localcluster/install-deps.sh fetches it)")
    want = re.search(r"^ARG CRIU_SHA256=([0-9a-f]{64})$", (KIND / "node-image" / "Dockerfile").read_text(), re.M)
    assert want and hashlib.sha256(tarball.read_bytes()).hexdigest() == want.group(1)
    sha1 = hashlib.sha1(tarball.read_bytes()).hexdigest()  # the snapshot archive names files by SHA-1
    assert f"https://snapshot.debian.org/file/{sha1}" in (KIND / "node-image" / "Dockerfile").read_text()


def test_the_node_image_context_holds_the_projects_own_files(tmp_path: Path) -> None:
    result = run(["bash", KIND / "node-image" / "build.sh", "--context-only", tmp_path / "ctx"])
    assert result.returncode == 0, result.stderr
    ctx = Path(result.stdout.splitlines()[-1])
    assert (ctx / "criu_hook.sh").read_bytes() == (REPO / "node-agent" / "node_agent" / "criu_hook.sh").read_bytes()
    for name in ("go.mod", "go.sum", "tools.go"):
        assert (ctx / "realnode-go" / name).read_bytes() == (REPO / "localcluster" / "realnode" / "go" / name).read_bytes()
    assert modver(ctx / "realnode-go" / "go.mod", "github.com/containerd/containerd/v2").startswith("v2.3.")
    # Every file the Dockerfile copies from the context is there.
    for source in re.findall(r"^COPY (?!--from)(\S+)", (ctx / "Dockerfile").read_text(), re.M):
        assert (ctx / source).exists(), source


def test_criu_runtime_packages_names_the_libraries_packages() -> None:
    criu = CACHE / "criu-4.2.1" / "sbin" / "criu"
    if not criu.exists() or shutil.which("dpkg") is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{criu} (localcluster/install-deps.sh) and dpkg must exist in CI", pytrace=False)
        pytest.skip(f"{criu} not built or no dpkg")
    result = run(["bash", KIND / "node-image" / "criu-runtime-packages.sh", criu])
    assert result.returncode == 0, result.stderr
    packages = result.stdout.split()
    assert packages == sorted(set(packages))
    assert "libc6" in packages and "libprotobuf-c1" in packages and any(p.startswith("libnl-3") for p in packages)
    broken = run(["bash", KIND / "node-image" / "criu-runtime-packages.sh", "/nonexistent"])
    assert broken.returncode != 0


def kubectl() -> Path:
    """The project's kubectl (localcluster/k8s-binaries/build.sh: cached by version, built by CI first)."""
    need("go", "the project's kubectl is built from the Kubernetes Go module")
    result = run(["bash", REPO / "localcluster" / "k8s-binaries" / "build.sh"])
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.splitlines()[-1]) / "kubectl"


def render(overlay: Path) -> list[dict[str, Any]]:
    result = run([kubectl(), "kustomize", overlay])
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.mark.parametrize("where", ["kind-config/.state-test/overlay", "elsewhere"])
def test_write_overlay_names_the_image_by_digest(tmp_path: Path, where: str) -> None:
    target = REPO / where if where.startswith("kind-config") else tmp_path / "a" / "b"
    try:
        result = run(["bash", KIND / "write-overlay.sh", target, f"{REGISTRY}/podmigrate@{DIGEST}"])
        assert result.returncode == 0, result.stderr
        docs = render(target)
    finally:
        shutil.rmtree(REPO / "kind-config" / ".state-test", ignore_errors=True)
    images = {
        c["image"] for d in docs if d["kind"] in ("Deployment", "DaemonSet") for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images == {f"{REGISTRY}/podmigrate@{DIGEST}"}
    agent = next(d for d in docs if d["kind"] == "DaemonSet")
    command = agent["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[-3:] == ["--plain-http-registry", REGISTRY, "--no-encryption"], "kind nodes hold no key yet (README)"
    controller = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--webhook-allow-any-client" in controller and "--webhook-client-ca" not in controller
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "podmigrate-config")
    assert config["data"]["CHECKPOINT_REPOSITORY"] == f"{REGISTRY}/podmigrate-checkpoints"
    # Everything else is manifests/ as it is.
    assert {d["kind"] for d in docs} >= {"CustomResourceDefinition", "Namespace", "MutatingWebhookConfiguration"}


@pytest.mark.parametrize("image", ["podmigrate-registry:5000/podmigrate:kind", "x@sha256:abc", ""])
def test_write_overlay_refuses_anything_but_a_digest(tmp_path: Path, image: str) -> None:
    result = run(["bash", KIND / "write-overlay.sh", tmp_path, image])
    assert result.returncode != 0 and not (tmp_path / "kustomization.yaml").exists()


# ---------------------------------------------------------------- with Go: kind's own code


@pytest.fixture(scope="module")
def validator() -> Path:
    need("go", "the validator is built from the kind Go module")
    result = run(["bash", KIND / "build.sh", "validate"])
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.splitlines()[-1])


def validate(validator: Path, config: Path, *extra: str | Path) -> subprocess.CompletedProcess[str]:
    return run([validator / "validate", "-config", config, "-containerd-base", validator / "containerd-base.toml", *extra])


def test_kind_loads_and_validates_cluster_yaml(validator: Path, tmp_path: Path) -> None:
    result = validate(validator, CLUSTER_YAML, "-out", tmp_path, "-node-subnet", default_node_subnet())
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("validate: OK:")
    k8s = modver(REPO / "localcluster" / "k8s-binaries" / "go.mod", "k8s.io/kubernetes")
    assert f"Kubernetes {k8s}" in result.stdout
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "containerd.toml",
        "kubeadm-podmigrate-control-plane.yaml",
        "kubeadm-podmigrate-worker.yaml",
        "kubeadm-podmigrate-worker2.yaml",
    ]


def broken_variants() -> dict[str, tuple[str, str]]:
    """name -> (cluster.yaml with one thing wrong, what the validator must say)."""
    good = CLUSTER_YAML.read_text()
    return {
        "kind's default pod subnet": (good.replace("100.64.0.0/16", "10.244.0.0/16"), "overlaps the private range 10.0.0.0/8"),
        "kind's default service subnet": (
            good.replace("169.254.240.0/24", "10.96.0.0/12"),
            "networking.serviceSubnet 10.96.0.0/12 overlaps the private range",
        ),
        "a misspelt field (strict decoding)": (good.replace("featureGates:", "featureGate:"), "unable to decode config"),
        "kind's Validate (bad role)": (
            good.replace("- role: worker\n- role: worker", "- role: worker\n- role: boss"),
            "Validate",
        ),
        "gate off": (good.replace("ContainerCheckpoint: true", "ContainerCheckpoint: false"), "ContainerCheckpoint"),
        "no restore via create": (
            good.replace(
                '    enable_experimental_restore_via_create = true\n  [plugins."io.containerd.grpc.v1.cri".registry]',
                '  [plugins."io.containerd.grpc.v1.cri".registry]',
            ),
            "enable_experimental_restore_via_create is <nil>",
        ),
        "no kubelet patch": (good.replace("  serverTLSBootstrap: true\n", ""), "serverTLSBootstrap is <nil>"),
        "one worker": (good.replace("- role: worker\n- role: worker", "- role: worker"), "1 worker nodes"),
        "public API server": (good.replace("apiServerAddress: 127.0.0.1", "apiServerAddress: 0.0.0.0"), "not a loopback"),
    }


@pytest.mark.parametrize("name", list(broken_variants()))
def test_the_validator_rejects_a_broken_config(validator: Path, tmp_path: Path, name: str) -> None:
    text, message = broken_variants()[name]
    assert text != CLUSTER_YAML.read_text(), "the variant did not change anything"
    config = tmp_path / "cluster.yaml"
    config.write_text(text)
    result = validate(validator, config)
    assert result.returncode == 1 and message in result.stderr, result.stderr


def test_the_validator_rejects_a_private_node_network(validator: Path) -> None:
    result = validate(validator, CLUSTER_YAML, "-node-subnet", "172.18.0.0/16")
    assert result.returncode == 1 and "node network 172.18.0.0/16 overlaps the private range 172.16.0.0/12" in result.stderr


def test_containerd_2_3_reads_the_patched_config_as_restoring_checkpoints(validator: Path, tmp_path: Path) -> None:
    """The real nodes' containerd migrates kind's version-2 config the way a kind node's would."""
    assert validate(validator, CLUSTER_YAML, "-out", tmp_path).returncode == 0
    built = run(["bash", REPO / "localcluster" / "realnode" / "build.sh"])
    assert built.returncode == 0, built.stderr
    containerd = Path(built.stdout.splitlines()[-1]) / "containerd"
    migrated = run([containerd, "--config", tmp_path / "containerd.toml", "config", "migrate"])
    assert migrated.returncode == 0, migrated.stderr
    config = tomllib.loads(migrated.stdout)
    runtime = config["plugins"]["io.containerd.cri.v1.runtime"]
    assert runtime["enable_criu"] is True and runtime["enable_experimental_restore_via_create"] is True
    assert config["plugins"]["io.containerd.cri.v1.images"]["registry"]["config_path"] == "/etc/containerd/certs.d"


def test_kind_builds_at_the_pinned_version() -> None:
    need("go", "kind is built from its Go module")
    result = run(["bash", KIND / "build.sh", "kind"])
    assert result.returncode == 0, result.stderr
    version = run([Path(result.stdout.splitlines()[-1]) / "kind", "version"])
    assert version.stdout.startswith(f"kind {modver(KIND / 'validate' / 'go.mod', 'sigs.k8s.io/kind')} ")


# ---------------------------------------------------------------- with the local cluster's API server


@pytest.mark.cluster
def test_the_api_server_accepts_the_kind_install(kube: Any, tmp_path: Path) -> None:
    """The overlay kind-up.sh applies, through the real API server's admission and schemas (dry run)."""
    overlay = tmp_path / "overlay"
    assert run(["bash", KIND / "write-overlay.sh", overlay, f"{REGISTRY}/podmigrate@{DIGEST}"]).returncode == 0
    kube.run("apply", "-k", str(REPO / "manifests" / "rbac"))  # the namespace must exist for a dry run
    dry_run = kube.run("apply", "-k", str(overlay), "--dry-run=server")
    for created in (
        "customresourcedefinition.apiextensions.k8s.io/podmigrations.podmigrate.io",
        "configmap/podmigrate-config",
        "daemonset.apps/podmigrate-agent",
        "deployment.apps/podmigrate-controller",
        "mutatingwebhookconfiguration.admissionregistration.k8s.io/podmigrate",
    ):
        assert created in dry_run.stdout, dry_run.stdout
