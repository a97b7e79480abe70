"""Every file name, annotation and media type of the checkpoint formats, as named constants.

Nothing else in the project spells these strings. They come from upstream, not from us:

* the archive layout is CRI-O's (the names are checkpointctl's ``lib/metadata.go``), which is
  what ``POST /checkpoint`` on a kubelet leaves under ``/var/lib/kubelet/checkpoints``;
* the image annotations are the ones each runtime looks for when a container's image is a
  checkpoint (CRI-O, containerd, Podman), plus checkpointctl's descriptive
  ``org.criu.checkpoint.*`` family;
* the media types are the OCI image-spec's. CRI-O reads annotations only from an OCI
  manifest, so checkpoint images are always OCI, never Docker v2.
"""

from __future__ import annotations

from typing import Final

# --- The checkpoint archive (CRI-O layout) -----------------------------------------------
CHECKPOINT_DIRECTORY: Final = "checkpoint"  # CRIU's image files
CONFIG_DUMP_FILE: Final = "config.dump"  # container metadata (JSON)
SPEC_DUMP_FILE: Final = "spec.dump"  # the container's OCI runtime spec (JSON)
ROOTFS_DIFF_TAR: Final = "rootfs-diff.tar"  # files changed in the container's rootfs
DELETED_FILES_FILE: Final = "deleted.files"  # JSON list of rootfs paths deleted
BIND_MOUNTS_FILE: Final = "bind.mounts"  # JSON list of the container's bind mounts
STATS_DUMP_FILE: Final = "stats-dump"  # CRIU's dump statistics (protobuf)
DUMP_LOG_FILE: Final = "dump.log"
RESTORE_LOG_FILE: Final = "restore.log"
CONTAINER_LOG_FILE: Final = "container.log"
NETWORK_STATUS_FILE: Final = "network.status"  # Podman only
DEVSHM_CHECKPOINT_TAR: Final = "devshm-checkpoint.tar"  # Podman only
STATUS_DUMP_FILE: Final = "status.dump"  # containerd only

# CRIU's image files under CHECKPOINT_DIRECTORY, as criu/image-desc.c names them ({...}: a number).
# Only the small ones that describe the processes are read for an inspection (ocicheckpoint.criuimages);
# the memory itself (pages-*.img) never is.
CRIU_PSTREE_IMAGE: Final = "pstree.img"  # the process tree: pid, ppid, pgid, sid, threads
CRIU_CORE_IMAGE: Final = "core-{pid}.img"  # per task: comm, state (one per thread)
CRIU_IDS_IMAGE: Final = "ids-{pid}.img"  # per process: which files table, mount namespace... it uses
CRIU_MM_IMAGE: Final = "mm-{pid}.img"  # per process: its memory areas (VMAs)
CRIU_PAGEMAP_IMAGE: Final = "pagemap-{pid}.img"  # per process: which pages were dumped
CRIU_PAGES_IMAGE: Final = "pages-{id}.img"  # the raw memory pages (large)
CRIU_FS_IMAGE: Final = "fs-{pid}.img"  # per process: cwd and root
CRIU_FDINFO_IMAGE: Final = "fdinfo-{files_id}.img"  # per files table: fd -> file id
CRIU_FILES_IMAGE: Final = "files.img"  # every open file and socket by id (CRIU >= 3.4: all kinds in one)
CRIU_REG_FILES_IMAGE: Final = "reg-files.img"  # older CRIU: regular files by id
CRIU_INETSK_IMAGE: Final = "inetsk.img"  # older CRIU: TCP/UDP sockets by id
CRIU_UNIXSK_IMAGE: Final = "unixsk.img"  # older CRIU: unix sockets by id
CRIU_PIPES_IMAGE: Final = "pipes.img"  # older CRIU: pipes by id
CRIU_MOUNTPOINTS_IMAGE: Final = "mountpoints-{mnt_ns_id}.img"  # per mount namespace: its mounts

# The kubelet's archive name: checkpoint-<pod>_<namespace>-<container>-<RFC 3339 time>.tar
KUBELET_CHECKPOINTS_SUBDIR: Final = "checkpoints"
KUBELET_ARCHIVE_PATTERN: Final = "checkpoint-{pod}_{namespace}-{container}-{timestamp}.tar"

# Inside spec.dump: CRI-O keeps the container's Kubernetes annotations as one JSON string here
# and refuses to restore an archive without it.
CRIO_ANNOTATIONS_KEY: Final = "io.kubernetes.cri-o.Annotations"

# Mounts CRI-O recreates itself on restore; every other mount of the original must be
# requested again by the new container, or the restore is refused.
CRIO_RESTORE_IGNORED_MOUNTS: Final = frozenset(
    {
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/mqueue",
        "/sys",
        "/sys/fs/cgroup",
        "/dev/shm",
        "/etc/resolv.conf",
        "/etc/hostname",
        "/etc/passwd",
        "/etc/group",
        "/run/secrets",
        "/run/.containerenv",
    }
)

# --- Annotations of a checkpoint image ------------------------------------------------------
# Which runtime reads which key: CRI-O decides "this image is a checkpoint" from the first.
ANNOTATION_CRIO_CHECKPOINT_NAME: Final = "io.kubernetes.cri-o.annotations.checkpoint.name"
ANNOTATION_CONTAINERD_CHECKPOINT_NAME: Final = "org.criu.checkpoint.container.name"
ANNOTATION_PODMAN_CHECKPOINT_NAME: Final = "io.podman.annotations.checkpoint.name"
# checkpointctl's descriptive family.
ANNOTATION_ENGINE: Final = "org.criu.checkpoint.engine"
ANNOTATION_POD: Final = "org.criu.checkpoint.pod"
ANNOTATION_NAMESPACE: Final = "org.criu.checkpoint.namespace"
ANNOTATION_ROOTFS_IMAGE_NAME: Final = "org.criu.checkpoint.rootfsImageName"
ANNOTATION_ROOTFS_IMAGE_ID: Final = "org.criu.checkpoint.rootfsImageID"
ANNOTATION_RUNTIME: Final = "org.criu.checkpoint.runtime"
ANNOTATION_CRIU_VERSION: Final = "org.criu.checkpoint.criu.version"
ANNOTATION_HOST_ARCH: Final = "org.criu.checkpoint.host.arch"
ANNOTATION_HOST_KERNEL: Final = "org.criu.checkpoint.host.kernel"
ANNOTATION_CGROUP_VERSION: Final = "org.criu.checkpoint.cgroup.version"
# Standard OCI annotation for when the image was made.
ANNOTATION_OCI_CREATED: Final = "org.opencontainers.image.created"

CHECKPOINT_NAME_ANNOTATIONS: Final = (
    ANNOTATION_CRIO_CHECKPOINT_NAME,
    ANNOTATION_CONTAINERD_CHECKPOINT_NAME,
    ANNOTATION_PODMAN_CHECKPOINT_NAME,
)

# --- OCI media types -------------------------------------------------------------------------
MEDIA_TYPE_OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_OCI_LAYER_TAR: Final = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPE_OCI_LAYER_GZIP: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_TYPE_DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_TYPE_DOCKER_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_TYPE_DOCKER_LAYER_GZIP: Final = "application/vnd.docker.image.rootfs.diff.tar.gzip"

MANIFEST_MEDIA_TYPES: Final = (
    MEDIA_TYPE_OCI_MANIFEST,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_DOCKER_LIST,
)
GZIP_LAYER_MEDIA_TYPES: Final = frozenset({MEDIA_TYPE_OCI_LAYER_GZIP, MEDIA_TYPE_DOCKER_LAYER_GZIP})

# --- The volume-data artifact: a pod's emptyDir contents, captured while it was frozen -----
# One OCI artifact per migration (beside the per-container checkpoint images): an image
# manifest whose artifactType and config name podmigrate's format, with one uncompressed tar
# layer per emptyDir volume (entries relative to the volume's root). No runtime runs it: the
# target node's agent stages it and the node's CRIU pre-restore hook moves it into the new
# pod's emptyDir directories (see node_agent/volumedata.py).
ARTIFACT_TYPE_VOLUME_DATA: Final = "application/vnd.podmigrate.volume-data.v1"
MEDIA_TYPE_VOLUME_DATA_CONFIG: Final = "application/vnd.podmigrate.volume-data.config.v1+json"
MEDIA_TYPE_VOLUME_DATA_LAYER: Final = "application/vnd.podmigrate.volume-data.layer.v1.tar"
ANNOTATION_VOLUME_NAME: Final = "io.podmigrate.volume.name"  # on each layer: which emptyDir it holds
ANNOTATION_VOLUME_MEDIUM: Final = "io.podmigrate.volume.medium"  # "" (node disk) or "Memory"
ANNOTATION_VOLUME_POD: Final = "io.podmigrate.volume-data.pod"  # on the manifest: namespace/name

# --- ocicrypt: encrypted layers (github.com/containers/ocicrypt v1.2.1, as imgcrypt v2.0.2 and
# CRI-O use it) ---------------------------------------------------------------------------------
# An encrypted layer's media type is the plaintext one with this suffix; the descriptor's
# digest and size are the ciphertext's, the plaintext digest travels inside the wrapped keys.
ENCRYPTED_MEDIA_TYPE_SUFFIX: Final = "+encrypted"
MEDIA_TYPE_OCI_LAYER_TAR_ENCRYPTED: Final = MEDIA_TYPE_OCI_LAYER_TAR + ENCRYPTED_MEDIA_TYPE_SUFFIX
MEDIA_TYPE_OCI_LAYER_GZIP_ENCRYPTED: Final = MEDIA_TYPE_OCI_LAYER_GZIP + ENCRYPTED_MEDIA_TYPE_SUFFIX
# ocicrypt.go: the JWE key wrapper's annotation (comma-separated base64 JWE JSON serializations,
# one per wrapping) and the base64 JSON of PublicLayerBlockCipherOptions.
ANNOTATION_ENC_KEYS_JWE: Final = "org.opencontainers.image.enc.keys.jwe"
ANNOTATION_ENC_PUBOPTS: Final = "org.opencontainers.image.enc.pubopts"
ANNOTATION_ENC_PREFIX: Final = "org.opencontainers.image.enc."  # ocicrypt.FilterOutAnnotations
# blockcipher.go: the one layer cipher ocicrypt implements (AES-256-CTR, then HMAC-SHA256 of
# the ciphertext keyed with the same 32-byte key) and the JSON keys of its options.
CIPHER_AES_256_CTR_HMAC_SHA256: Final = "AES_256_CTR_HMAC_SHA256"
CIPHER_OPTION_NONCE: Final = "nonce"
OPTS_SYMKEY: Final = "symkey"  # PrivateLayerBlockCipherOptions
OPTS_DIGEST: Final = "digest"  # PrivateLayerBlockCipherOptions: the plaintext layer's digest
OPTS_CIPHER_OPTIONS: Final = "cipheroptions"  # both
OPTS_CIPHER: Final = "cipher"  # PublicLayerBlockCipherOptions
OPTS_HMAC: Final = "hmac"  # PublicLayerBlockCipherOptions
# keywrap/jwe/keywrapper_jwe.go via go-jose v4: key-encryption algorithms per key type (RSA keys
# get RSA-OAEP, i.e. SHA-1 OAEP) and the content encryption (A256GCM).
JWE_ALG_RSA_OAEP: Final = "RSA-OAEP"
JWE_ALG_RSA_OAEP_256: Final = "RSA-OAEP-256"
JWE_ENC_A128GCM: Final = "A128GCM"
JWE_ENC_A192GCM: Final = "A192GCM"
JWE_ENC_A256GCM: Final = "A256GCM"
# JWE JSON serialization (RFC 7516 section 7.2) member and header names.
JWE_PROTECTED: Final = "protected"
JWE_UNPROTECTED: Final = "unprotected"
JWE_HEADER: Final = "header"
JWE_RECIPIENTS: Final = "recipients"
JWE_ENCRYPTED_KEY: Final = "encrypted_key"
JWE_IV: Final = "iv"
JWE_CIPHERTEXT: Final = "ciphertext"
JWE_TAG: Final = "tag"
JWE_AAD: Final = "aad"
JWE_HEADER_ALG: Final = "alg"
JWE_HEADER_ENC: Final = "enc"
JWE_HEADER_ZIP: Final = "zip"
# Beside a layer file on the source node: its encrypted copy, pushed, then deleted with it.
ENCRYPTED_LAYER_FILE_SUFFIX: Final = ".enc"
