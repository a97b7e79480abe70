"""The kubelet's half of ``securityContext``: what applies to a container, and what it refuses.

On a real node these decisions are the kubelet's, before it calls CRI ``CreateContainer``: it
merges the pod's security context into the container's, checks ``runAsNonRoot`` against the
image's user (from the runtime's image status) and translates ``mountPropagation``. What it
refuses there is a ``CreateContainerConfigError`` with the kubelet's own message, which is what
a tool (or a person running ``kubectl describe``) sees; so the stand-in keeps this half apart
from CRI-O's (``containers``: users from the image's passwd file, capabilities, privileged).

``seccompProfile``, AppArmor and SELinux options are passed over: the stand-in installs no
seccomp filter or LSM profile (see ``containers.oci_spec``), as a node without them would.
"""

from __future__ import annotations

from typing import Any

from localcluster.node.containers import ContainerError, SecurityContext
from localcluster.node.images import LocalImage

CONFIG_ERROR = "CreateContainerConfigError"
# Fields a pod-level securityContext sets for every container that does not set them itself
# (DetermineEffectiveSecurityContext); the rest exist only per container.
POD_LEVEL_FIELDS = (
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "seLinuxOptions",
    "seccompProfile",
    "appArmorProfile",
    "windowsOptions",
)
# The kubelet's MountPropagation -> CRI -> CRI-O's bind mount option.
PROPAGATION = {None: "rprivate", "None": "rprivate", "HostToContainer": "rslave", "Bidirectional": "rshared"}


def effective(pod_spec: dict[str, Any], container: dict[str, Any]) -> dict[str, Any]:
    """The container's security context with the pod's filled in where the container sets nothing."""
    pod_sc = pod_spec.get("securityContext") or {}
    sc = dict(container.get("securityContext") or {})
    for key in POD_LEVEL_FIELDS:
        if sc.get(key) is None and pod_sc.get(key) is not None:
            sc[key] = pod_sc[key]
    return sc


def format_pod(pod: dict[str, Any]) -> str:
    """How the kubelet names a pod in its messages (``format.Pod``)."""
    meta = pod["metadata"]
    return f"{meta['name']}_{meta['namespace']}({meta['uid']})"


def verify_run_as_non_root(pod: dict[str, Any], container: dict[str, Any], *, image: LocalImage) -> None:
    """The kubelet's ``verifyRunAsNonRoot``: only a numeric non-zero user passes ``runAsNonRoot``.

    An image without a ``User`` runs as root, so it needs an explicit ``runAsUser``.
    """
    sc = effective(pod["spec"], container)
    if not sc.get("runAsNonRoot"):
        return
    where = f'(pod: "{format_pod(pod)}", container: {container["name"]})'
    if sc.get("runAsUser") is not None:
        if int(sc["runAsUser"]) == 0:
            raise ContainerError(f"container's runAsUser breaks non-root policy {where}", reason=CONFIG_ERROR)
        return
    if image.uid == 0 or not image.user:
        raise ContainerError(f"container has runAsNonRoot and image will run as root {where}", reason=CONFIG_ERROR)
    if image.uid is None:
        name = image.user.split(":", 1)[0]
        raise ContainerError(
            f"container has runAsNonRoot and image has non-numeric user ({name}), cannot verify user is non-root {where}",
            reason=CONFIG_ERROR,
        )


def container_security(pod: dict[str, Any], container: dict[str, Any], *, image: LocalImage) -> SecurityContext:
    """What the kubelet sends CRI-O as the container's LinuxContainerSecurityContext (after the checks)."""
    verify_run_as_non_root(pod, container, image=image)
    sc = effective(pod["spec"], container)
    pod_sc = pod["spec"].get("securityContext") or {}
    run_as_user: int | None
    username = ""
    if sc.get("runAsUser") is not None:
        run_as_user = int(sc["runAsUser"])
    elif image.user and image.uid is None:
        run_as_user, username = None, image.user.split(":", 1)[0]
    else:
        run_as_user = image.uid or 0  # no User in the image: root
    groups = [int(pod_sc["fsGroup"])] if pod_sc.get("fsGroup") is not None else []
    groups += [int(g) for g in pod_sc.get("supplementalGroups") or []]
    caps = sc.get("capabilities") or {}
    escalation = sc.get("allowPrivilegeEscalation")
    return SecurityContext(
        run_as_user=run_as_user,
        run_as_username=username,
        run_as_group=int(sc["runAsGroup"]) if sc.get("runAsGroup") is not None else None,
        supplemental_groups=tuple(groups),
        privileged=bool(sc.get("privileged")),
        readonly_rootfs=bool(sc.get("readOnlyRootFilesystem")),
        no_new_privs=escalation is not None and not escalation,
        add_capabilities=tuple(caps.get("add") or ()),
        drop_capabilities=tuple(caps.get("drop") or ()),
    )


def mount_propagation(volume_mount: dict[str, Any], *, privileged: bool) -> str:
    """A volumeMount's ``mountPropagation`` as CRI-O's bind option; Bidirectional only for privileged
    containers (the API server's rule, kept here for pods it never validated, such as static ones)."""
    mode = volume_mount.get("mountPropagation")
    if mode not in PROPAGATION:
        raise ContainerError(f'invalid MountPropagation mode: "{mode}"', reason=CONFIG_ERROR)
    if mode == "Bidirectional" and not privileged:
        raise ContainerError(
            f"volumeMount {volume_mount['name']!r}: Bidirectional mount propagation is available only to privileged containers",
            reason=CONFIG_ERROR,
        )
    return PROPAGATION[mode]


def fs_user(pod_spec: dict[str, Any]) -> int | None:
    """The kubelet's ``FsUserFrom``: the ``runAsUser`` every (init) container has, if they all have the
    same explicit one; projected ServiceAccount tokens are then written 0600 owned by it."""
    found: int | None = None
    for container in [*(pod_spec.get("initContainers") or []), *(pod_spec.get("containers") or [])]:
        uid = effective(pod_spec, container).get("runAsUser")
        if uid is None or (found is not None and int(uid) != found):
            return None
        found = int(uid)
    return found
