"""The stand-in's security contexts and host namespaces: what the kubelet half asks for, the OCI spec CRI-O's half writes.

No cluster: these build specs (and volume files) and compare them with what kubelet + CRI-O
produce for the same pod, podmigrate's own DaemonSet and Deployment included.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from localcluster.node import containers, pods, securitycontext
from localcluster.node.containers import ContainerError, ContainerRequest, Mount, Sandbox, SecurityContext, oci_spec
from localcluster.node.images import LocalImage, image_user
from localcluster.node.volumes import VolumeManager
from ocicheckpoint import image as oci
from ocicheckpoint.reference import Reference

REPO = Path(__file__).resolve().parents[3]
NETNS = Path("/run/netns/pm99-test")


def make_image(
    root: Path, *, user: str = "", passwd: str = "root:x:0:0:root:/root:/bin/sh\n", group: str = "root:x:0:\n"
) -> LocalImage:
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc" / "passwd").write_text(passwd)
    (root / "etc" / "group").write_text(group)
    descriptor = oci.Descriptor(media_type="application/vnd.oci.image.config.v1+json", digest="sha256:" + "0" * 64, size=2)
    return LocalImage(
        reference=Reference(registry="registry.test", repository="app", tag="1", digest="sha256:" + "1" * 64),
        manifest=oci.Manifest(
            media_type="application/vnd.oci.image.manifest.v1+json", config=descriptor, layers=(), annotations={}
        ),
        config=oci.ImageConfig(cmd=("sleep", "3600")),
        root=root,
        user=user,
    )


def make_sandbox(tmp_path: Path, **kw: Any) -> Sandbox:
    return Sandbox(
        uid="u-1", name="p", namespace="ns", hostname="p", netns_path=kw.pop("netns_path", NETNS), directory=tmp_path, **kw
    )


def make_request(
    image: LocalImage, *, security: SecurityContext | None = None, mounts: list[Mount] | None = None
) -> ContainerRequest:
    return ContainerRequest(
        name="c",
        attempt=0,
        image_name="registry.test/app:1",
        image=image,
        command=[],
        args=[],
        env=[],
        working_dir="",
        mounts=mounts or [],
        annotations={},
        labels={},
        log_path=Path("/nonexistent/0.log"),
        security=security or SecurityContext(),
    )


def spec_for(tmp_path: Path, *, sandbox: Sandbox | None = None, **kw: Any) -> dict[str, Any]:
    image = kw.pop("image", None) or make_image(tmp_path / "rootfs")
    return oci_spec(
        sandbox=sandbox or make_sandbox(tmp_path), request=make_request(image, **kw), container_id="cid", cgroups_path="/x/cid"
    )


def make_pod(containers_: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u-1"}, "spec": {"containers": containers_, **spec}}


def namespaces(spec: dict[str, Any]) -> dict[str, str | None]:
    return {ns["type"]: ns.get("path") for ns in spec["linux"]["namespaces"]}


def mount(spec: dict[str, Any], destination: str) -> dict[str, Any]:
    return next(m for m in spec["mounts"] if m["destination"] == destination)


# --- namespaces ------------------------------------------------------------------------------


def test_an_ordinary_pod_gets_namespaces_of_its_own_and_runs_as_the_image_root(tmp_path: Path) -> None:
    spec = spec_for(tmp_path)
    assert namespaces(spec) == {"pid": None, "ipc": None, "uts": None, "mount": None, "network": str(NETNS)}
    assert spec["process"]["user"] == {"uid": 0, "gid": 0, "additionalGids": [0]}
    assert spec["process"]["capabilities"]["effective"] == containers.DEFAULT_CAPABILITIES
    assert spec["process"]["noNewPrivileges"] is False and spec["root"]["readonly"] is False
    assert spec["linux"]["maskedPaths"] == containers.MASKED_PATHS and spec["linux"]["readonlyPaths"]
    assert spec["linux"]["resources"]["devices"] == [{"allow": False, "access": "rwm"}]
    assert "ro" in mount(spec, "/sys")["options"] and "devices" not in spec["linux"]
    assert "rootfsPropagation" not in spec["linux"]


def test_host_network_pid_and_ipc_leave_those_namespaces_out(tmp_path: Path) -> None:
    sandbox = make_sandbox(tmp_path, netns_path=None, host_pid=True, host_ipc=True)
    assert sandbox.host_network
    spec = spec_for(tmp_path, sandbox=sandbox)
    assert namespaces(spec) == {"uts": None, "mount": None}, "the node's network, PIDs and IPC; its own hostname"
    assert mount(spec, "/dev/shm") == {
        "destination": "/dev/shm",
        "type": "bind",
        "source": "/dev/shm",
        "options": ["rbind", "nosuid", "noexec", "nodev"],
    }
    assert "io.kubernetes.cri-o.IP.0" not in spec["annotations"]


def test_host_pid_alone_keeps_the_network_namespace(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, sandbox=make_sandbox(tmp_path, host_pid=True, ip="169.254.101.6"))
    assert namespaces(spec) == {"ipc": None, "uts": None, "mount": None, "network": str(NETNS)}
    assert spec["annotations"]["io.kubernetes.cri-o.IP.0"] == "169.254.101.6"


# --- privileged, capabilities, read-only root ------------------------------------------------


def test_privileged_gets_every_capability_and_device_and_no_masked_paths(tmp_path: Path) -> None:
    security = SecurityContext(privileged=True, drop_capabilities=("ALL",))  # CRI-O: ignored when privileged
    spec = spec_for(tmp_path, security=security)
    caps = spec["process"]["capabilities"]
    assert caps["bounding"] == caps["effective"] == caps["permitted"] == containers.host_capabilities()
    assert "CAP_SYS_ADMIN" in caps["effective"]
    assert spec["linux"]["maskedPaths"] == [] and spec["linux"]["readonlyPaths"] == []
    assert spec["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert "rw" in mount(spec, "/sys")["options"] and "ro" not in mount(spec, "/sys")["options"]
    null = next(d for d in spec["linux"]["devices"] if d["path"] == "/dev/null")
    assert (null["type"], null["major"], null["minor"]) == ("c", 1, 3)
    assert not any(d["path"].startswith("/dev/pts/") for d in spec["linux"]["devices"])


def test_host_capabilities_are_this_process_bounding_set() -> None:
    status = Path("/proc/self/status").read_text()
    bits = int(next(line for line in status.splitlines() if line.startswith("CapBnd:")).split()[1], 16)
    assert containers.host_capabilities() == [c for i, c in enumerate(containers.CAPABILITY_NAMES) if bits >> i & 1]


@pytest.mark.parametrize(
    ("add", "drop", "expected"),
    [
        ((), ("ALL",), []),
        (("NET_BIND_SERVICE",), ("ALL",), ["CAP_NET_BIND_SERVICE"]),
        (
            ("net_admin",),
            ("KILL", "CAP_CHOWN"),
            [c for c in containers.DEFAULT_CAPABILITIES if c not in ("CAP_KILL", "CAP_CHOWN")] + ["CAP_NET_ADMIN"],
        ),
    ],
)
def test_capabilities_add_and_drop_change_crio_defaults(add: tuple[str, ...], drop: tuple[str, ...], expected: list[str]) -> None:
    got = containers.capabilities(SecurityContext(add_capabilities=add, drop_capabilities=drop))
    assert sorted(got) == sorted(expected)


def test_add_all_starts_from_every_capability() -> None:
    got = containers.capabilities(SecurityContext(add_capabilities=("ALL",), drop_capabilities=("SYS_ADMIN",)))
    assert set(got) == set(containers.host_capabilities()) - {"CAP_SYS_ADMIN"}


def test_unknown_capabilities_are_refused() -> None:
    with pytest.raises(ContainerError, match='unknown capability "CAP_FLY" to add'):
        containers.capabilities(SecurityContext(add_capabilities=("FLY",)))
    with pytest.raises(ContainerError, match="failed to drop cap CAP_FLY"):
        containers.capabilities(SecurityContext(drop_capabilities=("FLY",)))


def test_restricted_container_runs_read_only_without_capabilities(tmp_path: Path) -> None:
    security = SecurityContext(
        run_as_user=65532, run_as_group=65532, readonly_rootfs=True, no_new_privs=True, drop_capabilities=("ALL",)
    )
    spec = spec_for(tmp_path, security=security)
    assert spec["process"]["user"] == {"uid": 65532, "gid": 65532, "additionalGids": [65532]}
    assert spec["process"]["capabilities"] == {"bounding": [], "effective": [], "permitted": []}
    assert spec["process"]["noNewPrivileges"] is True
    assert spec["root"] == {"path": "rootfs", "readonly": True}


# --- users and groups (CRI-O's half) ---------------------------------------------------------

PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/home/app:/bin/sh\n"
GROUP = "root:x:0:\napp:x:1001:\nwheel:x:10:app,other\nextra:x:20:\n"


def user_of(tmp_path: Path, security: SecurityContext, *, image_user_: str = "") -> containers.ProcessUser:
    image = make_image(tmp_path / "rootfs", user=image_user_, passwd=PASSWD, group=GROUP)
    return containers.resolve_user(root=image.root, security=security, image_user=image.user)


def test_a_user_in_the_image_passwd_file_gets_its_group_and_memberships(tmp_path: Path) -> None:
    assert user_of(tmp_path, SecurityContext(run_as_username="app")) == containers.ProcessUser(
        uid=1000, gid=1001, additional_gids=(1001, 10)
    )
    assert user_of(tmp_path, SecurityContext(run_as_user=1000, supplemental_groups=(5,))).additional_gids == (1001, 10, 5)


def test_run_as_group_and_unknown_uids(tmp_path: Path) -> None:
    assert user_of(tmp_path, SecurityContext(run_as_user=4242)) == containers.ProcessUser(uid=4242, gid=0, additional_gids=(0,))
    assert user_of(tmp_path, SecurityContext(run_as_user=1000, run_as_group=7)).gid == 7


def test_the_image_user_with_its_group(tmp_path: Path) -> None:
    got = user_of(tmp_path, SecurityContext(run_as_user=65532), image_user_="65532:65532")
    assert (got.uid, got.gid) == (65532, 65532)
    assert user_of(tmp_path, SecurityContext(run_as_username="app"), image_user_="app:extra").gid == 20
    assert user_of(tmp_path, SecurityContext(run_as_user=5), image_user_="65532:65532").gid == 0, "not the image's user"


def test_unknown_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ContainerError, match="unable to find user nobody: no matching entries in passwd file"):
        user_of(tmp_path, SecurityContext(run_as_username="nobody"))
    with pytest.raises(ContainerError, match="unable to find group staff: no matching entries in group file"):
        user_of(tmp_path, SecurityContext(run_as_username="app"), image_user_="app:staff")


def test_passwd_symlinks_stay_inside_the_image(tmp_path: Path) -> None:
    outside = tmp_path / "host-passwd"
    outside.write_text("evil:x:0:0::/:/bin/sh\n")
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "lib").mkdir()
    (root / "lib" / "passwd").write_text("app:x:77:77::/:/bin/sh\n")
    (root / "etc" / "passwd").symlink_to("/lib/passwd")  # absolute: the image's /lib, not the host's
    assert containers.resolve_user(root=root, security=SecurityContext(run_as_username="app"), image_user="").uid == 77
    (root / "etc" / "passwd").unlink()
    (root / "etc" / "passwd").symlink_to(f"../../../../..{outside}")
    with pytest.raises(ContainerError, match="unable to find user evil"):
        containers.resolve_user(root=root, security=SecurityContext(run_as_username="evil"), image_user="")


def test_image_user_comes_from_the_config() -> None:
    assert image_user(b'{"config": {"User": "65532:65532", "Cmd": ["x"]}}') == "65532:65532"
    assert image_user(b'{"config": {}}') == "" and image_user(b"not json") == ""


# --- the kubelet's half ----------------------------------------------------------------------


def test_container_settings_override_the_pod_ones(tmp_path: Path) -> None:
    image = make_image(tmp_path)
    pod = make_pod(
        [
            {
                "name": "c",
                "securityContext": {"runAsUser": 2000, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False},
            }
        ],
        securityContext={"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 4000, "supplementalGroups": [5000]},
    )
    got = securitycontext.container_security(pod, pod["spec"]["containers"][0], image=image)
    assert got == SecurityContext(
        run_as_user=2000, run_as_group=3000, supplemental_groups=(4000, 5000), readonly_rootfs=True, no_new_privs=True
    )


def test_without_run_as_user_the_image_user_applies(tmp_path: Path) -> None:
    c = {"name": "c"}
    assert securitycontext.container_security(make_pod([c]), c, image=make_image(tmp_path, user="")).run_as_user == 0
    assert securitycontext.container_security(make_pod([c]), c, image=make_image(tmp_path, user="65532:1")).run_as_user == 65532
    named = securitycontext.container_security(make_pod([c]), c, image=make_image(tmp_path, user="app"))
    assert (named.run_as_user, named.run_as_username) == (None, "app")
    assert securitycontext.container_security(make_pod([c]), c, image=make_image(tmp_path)).no_new_privs is False


@pytest.mark.parametrize(
    ("image_user_", "container_sc", "message"),
    [
        ("", {}, 'container has runAsNonRoot and image will run as root (pod: "p_ns(u-1)", container: c)'),
        ("0:0", {}, 'container has runAsNonRoot and image will run as root (pod: "p_ns(u-1)", container: c)'),
        ("65532", {"runAsUser": 0}, 'container\'s runAsUser breaks non-root policy (pod: "p_ns(u-1)", container: c)'),
        ("app", {}, "container has runAsNonRoot and image has non-numeric user (app), cannot verify user is non-root"),
    ],
)
def test_run_as_non_root_refusals(tmp_path: Path, image_user_: str, container_sc: dict[str, Any], message: str) -> None:
    c = {"name": "c", "securityContext": container_sc}
    pod = make_pod([c], securityContext={"runAsNonRoot": True})
    with pytest.raises(ContainerError) as caught:
        securitycontext.container_security(pod, c, image=make_image(tmp_path, user=image_user_))
    assert message in str(caught.value) and caught.value.reason == "CreateContainerConfigError"


@pytest.mark.parametrize(
    ("image_user_", "container_sc"), [("65532", {}), ("", {"runAsUser": 65532}), ("", {"runAsNonRoot": False})]
)
def test_run_as_non_root_passes(tmp_path: Path, image_user_: str, container_sc: dict[str, Any]) -> None:
    c = {"name": "c", "securityContext": container_sc}
    pod = make_pod([c], securityContext={"runAsNonRoot": True})
    securitycontext.container_security(pod, c, image=make_image(tmp_path, user=image_user_))


def test_mount_propagation(tmp_path: Path) -> None:
    translate = securitycontext.mount_propagation
    assert translate({"name": "v"}, privileged=False) == "rprivate"
    assert translate({"name": "v", "mountPropagation": "None"}, privileged=False) == "rprivate"
    assert translate({"name": "v", "mountPropagation": "HostToContainer"}, privileged=False) == "rslave"
    assert translate({"name": "v", "mountPropagation": "Bidirectional"}, privileged=True) == "rshared"
    with pytest.raises(
        ContainerError, match="Bidirectional mount propagation is available only to privileged containers"
    ) as caught:
        translate({"name": "v", "mountPropagation": "Bidirectional"}, privileged=False)
    assert caught.value.reason == "CreateContainerConfigError"
    with pytest.raises(ContainerError, match='invalid MountPropagation mode: "Sideways"'):
        translate({"name": "v", "mountPropagation": "Sideways"}, privileged=True)

    slave = Mount(container_path="/host", host_path=str(tmp_path), propagation="rslave")
    spec = spec_for(tmp_path, mounts=[slave])
    assert mount(spec, "/host")["options"] == ["rbind", "rslave", "rw"] and spec["linux"]["rootfsPropagation"] == "rslave"
    shared = Mount(container_path="/shared", host_path=str(tmp_path), propagation="rshared", readonly=True)
    spec = spec_for(tmp_path, mounts=[slave, shared], security=SecurityContext(privileged=True))
    assert mount(spec, "/shared")["options"] == ["rbind", "rshared", "ro"] and spec["linux"]["rootfsPropagation"] == "rshared"


def test_fs_user_is_the_runasuser_every_container_shares() -> None:
    assert securitycontext.fs_user(make_pod([{"name": "a"}, {"name": "b"}], securityContext={"runAsUser": 7})["spec"]) == 7
    assert securitycontext.fs_user(make_pod([{"name": "a"}])["spec"]) is None
    differ = make_pod([{"name": "a"}, {"name": "b", "securityContext": {"runAsUser": 8}}], securityContext={"runAsUser": 7})
    assert securitycontext.fs_user(differ["spec"]) is None


# --- podmigrate's own install ----------------------------------------------------------------


def install_pod(path: str) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((REPO / path).read_text()) if d and d["kind"] in ("DaemonSet", "Deployment")]
    template = docs[0]["spec"]["template"]
    return {"metadata": {"name": "p", "namespace": "podmigrate-system", "uid": "u-1"}, "spec": template["spec"]}


def test_the_agent_daemonset_runs_privileged_on_the_host_network(tmp_path: Path) -> None:
    pod = install_pod("manifests/deploy/agent.yaml")
    container = pod["spec"]["containers"][0]
    security = securitycontext.container_security(pod, container, image=make_image(tmp_path / "rootfs"))
    mounts = [
        Mount(container_path=vm["mountPath"], host_path=str(tmp_path), readonly=bool(vm.get("readOnly")),
              propagation=securitycontext.mount_propagation(vm, privileged=security.privileged))
        for vm in container.get("volumeMounts") or []
    ]  # fmt: skip
    sandbox = make_sandbox(tmp_path, netns_path=None, host_pid=bool(pod["spec"].get("hostPID")))
    spec = spec_for(tmp_path, sandbox=sandbox, security=security, mounts=mounts)
    assert "network" not in namespaces(spec) and spec["process"]["user"]["uid"] == 0
    assert "CAP_SYS_ADMIN" in spec["process"]["capabilities"]["effective"] and spec["root"]["readonly"] is True
    assert mount(spec, "/var/lib/kubelet/pods")["options"] == ["rbind", "rslave", "ro"]


def test_the_controller_deployment_runs_as_65532_without_capabilities(tmp_path: Path) -> None:
    pod = install_pod("manifests/deploy/controller.yaml")
    container = pod["spec"]["containers"][0]
    image = make_image(tmp_path / "rootfs")  # no User: the pod's runAsUser is what makes runAsNonRoot pass
    spec = spec_for(tmp_path, security=securitycontext.container_security(pod, container, image=image), image=image)
    assert spec["process"]["user"] == {"uid": 65532, "gid": 65532, "additionalGids": [65532]}
    assert spec["process"]["capabilities"]["effective"] == [] and spec["process"]["noNewPrivileges"] is True
    assert spec["root"]["readonly"] is True
    without = {**pod, "spec": {**pod["spec"], "securityContext": {"runAsNonRoot": True}}}
    with pytest.raises(ContainerError, match="image will run as root"):
        securitycontext.container_security(without, container, image=image)


# --- what non-root containers must be able to read -------------------------------------------


class FakeCore:
    def __init__(self) -> None:
        self.secret = SimpleNamespace(data={"tls.crt": "Y2VydA==", "tls.key": "a2V5"})

    async def read_namespaced_secret(self, name: str, namespace: str) -> Any:
        return self.secret

    async def read_namespaced_config_map(self, name: str, namespace: str) -> Any:
        return SimpleNamespace(data={"ca.crt": "ca"}, binary_data=None)

    async def create_namespaced_service_account_token(self, sa: str, namespace: str, body: Any) -> Any:
        return SimpleNamespace(status=SimpleNamespace(token="tok"))


TOKEN_VOLUME = {
    "name": "kube-api-access",
    "projected": {
        "defaultMode": 0o644,
        "sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}, {"configMap": {"name": "root-ca"}}],
    },
}


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


async def test_volume_files_are_readable_by_the_container_user(tmp_path: Path) -> None:
    pod = make_pod(
        [{"name": "c"}],
        volumes=[
            {"name": "scratch", "emptyDir": {}},
            {"name": "tls", "secret": {"secretName": "s"}},
            {"name": "key", "secret": {"secretName": "s", "items": [{"key": "tls.key", "path": "k", "mode": 0o400}]}},
            {"name": "cfg", "configMap": {"name": "c", "defaultMode": 0o440}},
            TOKEN_VOLUME,
        ],
    )
    paths = await VolumeManager(core=FakeCore(), pod_dir=tmp_path).prepare(pod)  # type: ignore[arg-type]
    assert mode(paths["scratch"]) == 0o777
    assert mode(paths["tls"] / "tls.crt") == 0o644 and mode(paths["tls"]) == 0o755
    assert mode(paths["key"] / "k") == 0o400
    assert mode(paths["cfg"] / "ca.crt") == 0o440
    assert mode(paths["kube-api-access"] / "token") == 0o644, "no common runAsUser: defaultMode"


async def test_the_token_belongs_to_the_pods_run_as_user(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown needs root (as the node runs)")
    pod = make_pod([{"name": "c"}], securityContext={"runAsUser": 65532}, volumes=[TOKEN_VOLUME])
    paths = await VolumeManager(core=FakeCore(), pod_dir=tmp_path).prepare(pod)  # type: ignore[arg-type]
    token = paths["kube-api-access"] / "token"
    assert mode(token) == 0o600 and token.stat().st_uid == 65532
    assert mode(paths["kube-api-access"] / "ca.crt") == 0o644


async def test_fs_group_owns_the_volumes(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown needs root (as the node runs)")
    pod = make_pod(
        [{"name": "c"}],
        securityContext={"fsGroup": 2000},
        volumes=[{"name": "scratch", "emptyDir": {}}, {"name": "tls", "secret": {"secretName": "s", "defaultMode": 0o400}}],
    )
    paths = await VolumeManager(core=FakeCore(), pod_dir=tmp_path).prepare(pod)  # type: ignore[arg-type]
    assert paths["scratch"].stat().st_gid == 2000 and mode(paths["scratch"]) == 0o2777
    key = paths["tls"] / "tls.key"
    assert key.stat().st_gid == 2000 and mode(key) == 0o440
    assert mode(paths["tls"]) & 0o2000


async def test_host_path_types_are_checked(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    pod = make_pod([{"name": "c"}], volumes=[{"name": "h", "hostPath": {"path": str(tmp_path / "file"), "type": "Directory"}}])
    with pytest.raises(pods.VolumeError, match=f"hostPath type check failed: {tmp_path / 'file'} is not a directory"):
        await VolumeManager(core=FakeCore(), pod_dir=tmp_path / "pod").prepare(pod)  # type: ignore[arg-type]


# --- the kubelet half's sandbox: no network namespace for hostNetwork ------------------------


class NoNetwork:
    """A network allocator that must not be used."""

    async def setup(self, *, pod_uid: str) -> Any:
        raise AssertionError("hostNetwork pod asked for a network namespace")

    async def teardown(self, *, pod_uid: str) -> None:
        raise AssertionError("hostNetwork pod tore down a network namespace")


async def test_host_network_sandbox_uses_the_node_address_and_name(tmp_path: Path) -> None:
    ctx = pods.NodeContext(
        name="node-1", node_ip="127.0.7.1", core=None, runtime=None, images=None, network=NoNetwork(),  # type: ignore[arg-type]
        pods_dir=tmp_path / "pods", logs_dir=tmp_path / "logs", session=None, cgroup_parent="/localcluster-test",  # type: ignore[arg-type]
    )  # fmt: skip
    pod = make_pod([{"name": "c", "image": "registry.test/app:1"}], hostNetwork=True, hostPID=True, hostname="ignored")
    worker = pods.PodWorker(ctx=ctx, pod=pod)
    await worker._make_sandbox()
    sandbox = worker._sandbox
    assert sandbox is not None and sandbox.host_network and sandbox.host_pid and not sandbox.host_ipc
    assert sandbox.hostname == "node-1" and worker._pod_ip == "127.0.7.1"
    assert (worker.pod_dir / "hostname").read_text() == "node-1\n"
    hosts = (worker.pod_dir / "etc-hosts").read_text()
    assert hosts.startswith("# Kubernetes-managed hosts file (host network).\n") and "127.0.7.1\tnode-1\n" in hosts
    await worker._teardown(grace=0)
    assert not worker.pod_dir.exists()


MOUNTINFO = """\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
42 27 254:0 /run/netns /run/netns rw,relatime shared:1 - ext4 /dev/vda rw
50 27 254:0 /state/nodes /state/nodes rw,relatime shared:7 - ext4 /dev/vda rw
51 27 254:0 /slave /slave\\040dir rw,relatime master:7 - ext4 /dev/vda rw
"""


@pytest.mark.parametrize(
    ("host_path", "propagation", "error"),
    [
        ("/state/nodes/node-1/kubelet/pods", "rslave", None),
        ("/state/nodes/node-1/kubelet/pods", "rshared", None),
        ("/slave dir/x", "rslave", None),
        ("/var/lib/kubelet/pods", "rprivate", None),
        ("/slave dir/x", "rshared", 'path "/slave dir/x" is mounted on "/slave dir" but it is not a shared mount'),
        (
            "/var/lib/kubelet/pods",
            "rslave",
            'path "/var/lib/kubelet/pods" is mounted on "/" but it is not a shared or slave mount',
        ),
    ],
)
def test_propagation_needs_a_shared_or_slave_source(host_path: str, propagation: str, error: str | None) -> None:
    mounts = [Mount(container_path="/x", host_path=host_path, propagation=propagation)]
    if error is None:
        containers.check_propagation(mounts, mountinfo=MOUNTINFO)
    else:
        with pytest.raises(ContainerError) as caught:
            containers.check_propagation(mounts, mountinfo=MOUNTINFO)
        assert str(caught.value) == error and caught.value.reason == "CreateContainerError"
