"""The node agent's HTTP contract: paths, request and response bodies, defined once.

The agent parses requests with these classes and the control service's agent client can
build them with the same classes, so the two sides cannot drift apart. Parsing validates
everything a caller controls (names, image repository, tag, timeout) before any work starts;
a bad body is a ``ContractError`` (HTTP 400), never a half-done checkpoint.

Endpoints (JSON; every ``/v1`` path needs ``Authorization: Bearer``):

* ``POST /v1/checkpoint``  ``CheckpointRequest`` -> ``CheckpointResponse``
* ``DELETE /v1/checkpoint`` ``{"request_id"}`` -> ``{"aborted": bool, "deleted": [images]}``: the caller gave up on
  that checkpoint: one in flight is cancelled (and undone), a finished one's images are deleted
* ``POST /v1/thaw``        ``PodRef`` -> ``{"frozen": false, "thawed": [names]}``
* ``POST /v1/kill``        ``PodRef`` -> ``{"killed": [names]}`` (only frozen containers; 409 for a running one,
  or for a pod whose freeze lease lapsed)
* ``POST /v1/freeze-lease`` ``LeaseRequest`` -> ``{"seconds": n}`` (409 once it lapsed: the pod was thawed)
* ``GET  /v1/frozen``      ``?namespace=&pod=`` -> ``FrozenState``
* ``DELETE /v1/images``    ``{"image": "host/repo@sha256:..."}`` (or ``host/repo:tag``: what the tag names) ->
  ``{"deleted": bool}``
* ``POST /v1/volumes``     ``StageRequest`` -> ``StageResponse`` (a pod's emptyDir data staged for its restore here)
* ``GET /v1/volumes``      ``?namespace=&pod=`` -> ``{"restored": [pod UIDs the data moved into]}``
* ``DELETE /v1/volumes``   ``PodRef`` -> ``{"unstaged": bool}``
* ``GET /healthz``, ``GET /metrics`` (no authentication)

Errors are ``{"error": "...", "stage": "freeze|checkpoint|push"}`` (stage only where one applies).

Who may call: a ServiceAccount token minted for ``AUDIENCE`` (a projected token), never a token
meant for the API server, so an agent that receives one cannot replay it against the API server
and a token stolen from any other pod is refused. What a call may touch follows from the object
it acts on: the namespace of the pod, or for an image the namespace its repository path names
under the configured checkpoint repository (``checkpoint_repository``, ``namespace_of_image``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from ocicheckpoint.reference import Reference, parse_reference

PATH_CHECKPOINT: Final = "/v1/checkpoint"
PATH_THAW: Final = "/v1/thaw"
PATH_KILL: Final = "/v1/kill"
PATH_FROZEN: Final = "/v1/frozen"
PATH_IMAGES: Final = "/v1/images"
PATH_VOLUMES: Final = "/v1/volumes"
PATH_FREEZE_LEASE: Final = "/v1/freeze-lease"
MAX_LEASE_SECONDS: Final = 600
PATH_HEALTHZ: Final = "/healthz"
# Sent by the control service with every call: which migration it is for (namespace/name), for logs.
HEADER_MIGRATION: Final = "X-Podmigrate-Migration"
PATH_METRICS: Final = "/metrics"
# The audience of the tokens the agent accepts (TokenReview ``spec.audiences``): the controller's pod
# mounts a projected ServiceAccount token for it. The API server's own audience is refused.
AUDIENCE: Final = "podmigrate.io/agent"

Stage = Literal["freeze", "checkpoint", "push"]

DEFAULT_TIMEOUT_SECONDS: Final = 60
MAX_TIMEOUT_SECONDS: Final = 3600

# Kubernetes' own rules: namespaces and container names are DNS labels, pod names DNS subdomains.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
# The OCI distribution spec's tag grammar.
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


class ContractError(ValueError):
    """A request body or query that does not follow the contract (HTTP 400)."""


def _string(data: Mapping[str, Any], key: str, *, pattern: re.Pattern[str], what: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not pattern.match(value):
        raise ContractError(f"{key!r} must be a valid {what}, got {value!r}")
    return value


@dataclass(frozen=True, kw_only=True)
class PodRef:
    """Which pod: the body of ``/v1/thaw`` and the query of ``/v1/frozen``."""

    namespace: str
    pod: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PodRef:
        if not isinstance(data, Mapping):
            raise ContractError("expected a JSON object")
        return cls(
            namespace=_string(data, "namespace", pattern=_DNS_LABEL, what="namespace name"),
            pod=_string(data, "pod", pattern=_DNS_SUBDOMAIN, what="pod name"),
        )

    def to_json(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "pod": self.pod}


@dataclass(frozen=True, kw_only=True)
class EmptyDirVolume:
    """An emptyDir volume of the pod: its name (a DNS label) and medium ("" for node disk, or "Memory")."""

    name: str
    medium: str = ""

    @classmethod
    def from_json(cls, data: Any) -> EmptyDirVolume:
        if not isinstance(data, Mapping):
            raise ContractError("each volume must be {'name': ..., 'medium': '' or 'Memory'}")
        medium = data.get("medium") or ""
        if medium not in ("", "Memory"):
            raise ContractError(f"volume medium must be '' or 'Memory', got {medium!r}")
        return cls(name=_string(data, "name", pattern=_DNS_LABEL, what="volume name"), medium=medium)

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "medium": self.medium}


@dataclass(frozen=True, kw_only=True)
class CheckpointRequest:
    """Freeze (optionally) and checkpoint a pod's containers into images under ``image_repository``.

    ``containers`` None means every container of the pod. With one container the image is
    tagged ``tag``; with several, each is tagged ``<tag>-<container>`` (callers should use the
    digest-pinned ``image`` of the response anyway); the volume data is tagged ``<tag>-volumes``.
    ``timeout_seconds`` bounds each kubelet
    checkpoint call (the kubelet's own ``?timeout=``).
    """

    namespace: str
    pod: str
    image_repository: str
    tag: str
    containers: tuple[str, ...] | None = None
    freeze: bool = True
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    # emptyDir volumes whose files are captured (the pod still frozen) and pushed beside the images.
    volumes: tuple[EmptyDirVolume, ...] = ()
    # Makes the call idempotent: a retry with the same id joins the checkpoint in flight or gets its
    # answer again (for a while), instead of freezing and pushing a second time.
    request_id: str | None = None
    # With ``freeze``: the pod stays frozen only while this lease is renewed (``/v1/freeze-lease``);
    # when it lapses the agent thaws it and refuses to kill it. None: frozen until thawed or killed.
    freeze_lease_seconds: int | None = None

    @property
    def repository(self) -> Reference:
        return parse_reference(self.image_repository)

    def tag_for(self, container: str, *, multiple: bool) -> str:
        if not multiple:
            return self.tag
        tag = f"{self.tag}-{container}"
        return tag[:128]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CheckpointRequest:
        if not isinstance(data, Mapping):
            raise ContractError("expected a JSON object")
        ref = PodRef.from_json(data)
        repo = data.get("image_repository")
        if not isinstance(repo, str):
            raise ContractError("'image_repository' must be a string like host:port/repository")
        try:
            parsed = parse_reference(repo)
        except ValueError as exc:
            raise ContractError(f"'image_repository': {exc}") from None
        if parsed.tag or parsed.digest:
            raise ContractError("'image_repository' must not carry a tag or digest: pass the tag as 'tag'")
        tag = _string(data, "tag", pattern=_TAG, what="image tag")
        containers: tuple[str, ...] | None = None
        raw = data.get("containers")
        if raw is not None:
            if not isinstance(raw, list) or not raw or not all(isinstance(c, str) and _DNS_LABEL.match(c) for c in raw):
                raise ContractError("'containers' must be a non-empty list of container names (or absent for all)")
            if len(set(raw)) != len(raw):
                raise ContractError("'containers' lists a container twice")
            containers = tuple(raw)
        freeze = data.get("freeze", True)
        if not isinstance(freeze, bool):
            raise ContractError("'freeze' must be true or false")
        raw_volumes = data.get("volumes") or []
        if not isinstance(raw_volumes, list):
            raise ContractError("'volumes' must be a list of {'name': ..., 'medium': '' or 'Memory'}")
        volumes = tuple(EmptyDirVolume.from_json(v) for v in raw_volumes)
        if len({v.name for v in volumes}) != len(volumes):
            raise ContractError("'volumes' lists a volume twice")
        request_id = data.get("request_id")
        if request_id is not None and (not isinstance(request_id, str) or not _REQUEST_ID.match(request_id)):
            raise ContractError("'request_id' must be 1-128 characters of letters, digits, '.', '_' or '-'")
        lease = data.get("freeze_lease_seconds")
        if lease is not None and (isinstance(lease, bool) or not isinstance(lease, int) or not 1 <= lease <= MAX_LEASE_SECONDS):
            raise ContractError(f"'freeze_lease_seconds' must be an integer between 1 and {MAX_LEASE_SECONDS}")
        timeout = data.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)
        if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= MAX_TIMEOUT_SECONDS:
            raise ContractError(f"'timeout_seconds' must be an integer between 1 and {MAX_TIMEOUT_SECONDS}")
        return cls(
            namespace=ref.namespace,
            pod=ref.pod,
            image_repository=repo,
            tag=tag,
            containers=containers,
            freeze=freeze,
            timeout_seconds=timeout,
            volumes=volumes,
            request_id=request_id,
            freeze_lease_seconds=lease,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "namespace": self.namespace,
            "pod": self.pod,
            "image_repository": self.image_repository,
            "tag": self.tag,
            "freeze": self.freeze,
            "timeout_seconds": self.timeout_seconds,
        }
        if self.containers is not None:
            out["containers"] = list(self.containers)
        if self.volumes:
            out["volumes"] = [v.to_json() for v in self.volumes]
        if self.request_id is not None:
            out["request_id"] = self.request_id
        if self.freeze_lease_seconds is not None:
            out["freeze_lease_seconds"] = self.freeze_lease_seconds
        return out

    @property
    def volume_tag(self) -> str:
        return f"{self.tag[:120]}-volumes"


@dataclass(frozen=True, kw_only=True)
class ContainerTimings:
    """``checkpoint_s``: the kubelet checkpoint; ``push_s``: the archive read, hashed, encrypted and
    uploaded in one pass, with the image's config and manifest."""

    checkpoint_s: float
    push_s: float

    def to_json(self) -> dict[str, float]:
        return {"checkpoint_s": round(self.checkpoint_s, 4), "push_s": round(self.push_s, 4)}


@dataclass(frozen=True, kw_only=True)
class ContainerCheckpoint:
    """One container's checkpoint image: ``image`` is ``host/repo@sha256:...`` (pull by it; no tag: see docs/facts.md).

    ``inspection``: what the checkpoint holds (processes, memory, open files, sockets, mounts), the
    JSON of ``ocicheckpoint.criuimages.Inspection``; None when the agent could not read its CRIU
    images (or predates inspections). ``criu_version``: the CRIU that dumped it ("" when not said).
    Both are left out of the JSON when absent, so agents and control services of either age agree.
    """

    name: str
    image: str
    digest: str
    base_image: str
    archive_bytes: int
    image_bytes: int
    timings: ContainerTimings
    inspection: dict[str, Any] | None = None
    criu_version: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "digest": self.digest,
            "base_image": self.base_image,
            "archive_bytes": self.archive_bytes,
            "image_bytes": self.image_bytes,
            "timings": self.timings.to_json(),
        }
        if self.inspection is not None:
            out["inspection"] = self.inspection
        if self.criu_version:
            out["criu_version"] = self.criu_version
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ContainerCheckpoint:
        t = data["timings"]
        inspection = data.get("inspection")
        return cls(
            name=str(data["name"]),
            image=str(data["image"]),
            digest=str(data["digest"]),
            base_image=str(data["base_image"]),
            archive_bytes=int(data["archive_bytes"]),
            image_bytes=int(data["image_bytes"]),
            timings=ContainerTimings(checkpoint_s=float(t["checkpoint_s"]), push_s=float(t["push_s"])),
            inspection=dict(inspection) if isinstance(inspection, Mapping) else None,
            criu_version=str(data.get("criu_version") or ""),
        )


@dataclass(frozen=True, kw_only=True)
class VolumeDataCheckpoint:
    """The pod's emptyDir files, as one artifact ``image`` (``host/repo@sha256:...``)."""

    image: str
    digest: str
    volumes: tuple[str, ...]
    data_bytes: int  # the volumes' tars, uncompressed
    capture_s: float
    push_s: float

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "digest": self.digest,
            "volumes": list(self.volumes),
            "data_bytes": self.data_bytes,
            "timings": {"capture_s": round(self.capture_s, 4), "push_s": round(self.push_s, 4)},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VolumeDataCheckpoint:
        t = data.get("timings") or {}
        return cls(
            image=str(data["image"]),
            digest=str(data["digest"]),
            volumes=tuple(str(v) for v in data.get("volumes") or ()),
            data_bytes=int(data["data_bytes"]),
            capture_s=float(t.get("capture_s", 0.0)),
            push_s=float(t.get("push_s", 0.0)),
        )


# The stages of a checkpoint as the agent records them (``CheckpointResponse.stages``): the pod's
# containers frozen; one container's kubelet checkpoint (CRIU dump and archive); its image read,
# encrypted, hashed and uploaded in one pass (``upload``); the emptyDir files captured and pushed.
STAGE_FREEZE: Final = "freeze"
STAGE_DUMP: Final = "dump"
STAGE_UPLOAD: Final = "upload"
STAGE_VOLUMES: Final = "volumes"
CHECKPOINT_STAGES: Final = (STAGE_FREEZE, STAGE_DUMP, STAGE_UPLOAD, STAGE_VOLUMES)


@dataclass(frozen=True, kw_only=True)
class StageRecord:
    """One stage on the wall clock (``time.time()`` seconds), for the migration's timeline.

    Wall-clock rather than monotonic because the control service lays these out beside its own
    timestamps (``status.phases``); on one host (and on NTP-synced nodes) they are comparable.
    ``container`` is empty for a pod-wide stage (freeze, volumes).
    """

    name: str
    start: float
    end: float
    container: str = ""
    bytes: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "start": round(self.start, 4), "end": round(self.end, 4)}
        if self.container:
            out["container"] = self.container
        if self.bytes is not None:
            out["bytes"] = self.bytes
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StageRecord:
        nbytes = data.get("bytes")
        return cls(
            name=str(data["name"]),
            start=float(data["start"]),
            end=float(data["end"]),
            container=str(data.get("container") or ""),
            bytes=int(nbytes) if nbytes is not None else None,
        )


@dataclass(frozen=True, kw_only=True)
class CheckpointResponse:
    """``frozen``: whether the pod is frozen now (it stays frozen until ``/v1/thaw``)."""

    frozen: bool
    containers: tuple[ContainerCheckpoint, ...]
    freeze_s: float = 0.0
    total_s: float = 0.0
    volume_data: VolumeDataCheckpoint | None = None
    stages: tuple[StageRecord, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "frozen": self.frozen,
            "containers": [c.to_json() for c in self.containers],
            "timings": {"freeze_s": round(self.freeze_s, 4), "total_s": round(self.total_s, 4)},
        }
        if self.volume_data is not None:
            out["volume_data"] = self.volume_data.to_json()
        if self.stages:
            out["stages"] = [s.to_json() for s in self.stages]
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CheckpointResponse:
        timings = data.get("timings") or {}
        volume_data = data.get("volume_data")
        return cls(
            frozen=bool(data["frozen"]),
            containers=tuple(ContainerCheckpoint.from_json(c) for c in data["containers"]),
            freeze_s=float(timings.get("freeze_s", 0.0)),
            total_s=float(timings.get("total_s", 0.0)),
            volume_data=VolumeDataCheckpoint.from_json(volume_data) if volume_data else None,
            stages=tuple(StageRecord.from_json(s) for s in data.get("stages") or ()),
        )


@dataclass(frozen=True, kw_only=True)
class AbortRequest:
    request_id: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AbortRequest:
        value = data.get("request_id") if isinstance(data, Mapping) else None
        if not isinstance(value, str) or not _REQUEST_ID.match(value):
            raise ContractError("expected {'request_id': '...'} (1-128 letters, digits, '.', '_' or '-')")
        return cls(request_id=value)


@dataclass(frozen=True, kw_only=True)
class LeaseRequest:
    """Renew a frozen pod's freeze lease for ``seconds`` more."""

    namespace: str
    pod: str
    seconds: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LeaseRequest:
        ref = PodRef.from_json(data)
        seconds = data.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, int) or not 1 <= seconds <= MAX_LEASE_SECONDS:
            raise ContractError(f"'seconds' must be an integer between 1 and {MAX_LEASE_SECONDS}")
        return cls(namespace=ref.namespace, pod=ref.pod, seconds=seconds)

    def to_json(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "pod": self.pod, "seconds": self.seconds}


@dataclass(frozen=True, kw_only=True)
class StageRequest:
    """Stage the volume-data artifact ``image`` (digest-pinned) for the restore of ``namespace/pod`` on this node."""

    namespace: str
    pod: str
    image: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StageRequest:
        ref = PodRef.from_json(data)
        image = data.get("image")
        if not isinstance(image, str):
            raise ContractError("'image' must be a string like host/repository@sha256:...")
        try:
            parsed = parse_reference(image)
        except ValueError as exc:
            raise ContractError(f"'image': {exc}") from None
        if not parsed.digest:
            raise ContractError("'image' must be pinned by digest (host/repository@sha256:...)")
        return cls(namespace=ref.namespace, pod=ref.pod, image=image)

    def to_json(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "pod": self.pod, "image": self.image}


@dataclass(frozen=True, kw_only=True)
class StageResponse:
    volumes: tuple[str, ...]
    data_bytes: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"volumes": list(self.volumes), "data_bytes": self.data_bytes, "seconds": round(self.seconds, 4)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StageResponse:
        return cls(
            volumes=tuple(str(v) for v in data.get("volumes") or ()),
            data_bytes=int(data.get("data_bytes", 0)),
            seconds=float(data.get("seconds", 0.0)),
        )


@dataclass(frozen=True, kw_only=True)
class FrozenState:
    """``frozen`` is true when every running container of the pod is frozen; ``containers`` has each one's state."""

    frozen: bool
    containers: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"frozen": self.frozen, "containers": dict(self.containers)}


@dataclass(frozen=True, kw_only=True)
class DeleteImageRequest:
    """Delete one manifest: by digest, or (``host/repository:tag``) the one the tag names now.

    By tag for a caller that never got the digest: a checkpoint whose answer was lost (the caller
    timed out, or restarted) still pushed under the tag the caller chose, and must not stay.
    """

    image: Reference

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DeleteImageRequest:
        if not isinstance(data, Mapping) or not isinstance(data.get("image"), str):
            raise ContractError("expected {'image': 'host/repository@sha256:...'}")
        try:
            ref = parse_reference(data["image"])
        except ValueError as exc:
            raise ContractError(f"'image': {exc}") from None
        if not ref.digest and not ref.tag:
            raise ContractError("'image' must be pinned by digest (host/repository@sha256:...) or name a tag")
        return cls(image=ref)


def is_namespace(value: object) -> bool:
    """Is ``value`` a valid namespace name (a DNS label)?"""
    return isinstance(value, str) and bool(_DNS_LABEL.match(value))


def checkpoint_repository(*, root: str, namespace: str, pod: str) -> str:
    """Where the checkpoint images of ``namespace/pod`` go: ``<root>/<namespace>/<pod>``.

    The namespace is the first path segment under the root, so that an image's namespace can be
    read back from its reference alone (``namespace_of_image``) and registry permissions can be
    scoped per namespace by repository prefix.
    """
    return f"{root.rstrip('/')}/{namespace}/{pod}"


def namespace_of_image(*, root: str, image: Reference) -> str | None:
    """The namespace whose checkpoint ``image`` is, or None when it is not under ``root`` at all."""
    base = parse_reference(root.rstrip("/"))
    if image.registry != base.registry or not image.repository.startswith(base.repository + "/"):
        return None
    namespace, _, rest = image.repository[len(base.repository) + 1 :].partition("/")
    return namespace if _DNS_LABEL.match(namespace) and rest else None


def error_body(message: str, *, stage: Stage | None = None) -> dict[str, Any]:
    """The JSON of every error answer: one line of text, and the stage when it is known."""
    out: dict[str, Any] = {"error": " ".join(message.split())}
    if stage is not None:
        out["stage"] = stage
    return out
