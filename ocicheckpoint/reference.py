"""Image references (``host[:port]/repo[:tag][@digest]``), parsed once for everyone, and which registries are local."""

from __future__ import annotations

import re
from dataclasses import dataclass

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True, kw_only=True)
class Reference:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def ref(self) -> str:
        """What to ask the registry for: the digest when known, else the tag."""
        return self.digest or self.tag or "latest"

    def with_digest(self, digest: str) -> Reference:
        return Reference(registry=self.registry, repository=self.repository, tag=self.tag, digest=digest)

    def __str__(self) -> str:
        """``repo@digest`` when the digest is known, else ``repo:tag``.

        Never both: containers/image (CRI-O, Podman, skopeo) refuses ``repo:tag@digest`` ("Docker
        references with both a tag and digest are currently not supported"), and the digest alone
        names the content exactly. The tag stays in the registry for people browsing it.
        """
        out = f"{self.registry}/{self.repository}"
        if self.digest:
            return f"{out}@{self.digest}"
        return f"{out}:{self.tag}" if self.tag else out


def parse_reference(text: str) -> Reference:
    """Parse a fully qualified reference; a registry host is required (no Docker Hub default)."""
    rest, _, digest = text.partition("@")
    if digest and not _DIGEST.match(digest):
        raise ValueError(f"invalid digest in image reference {text!r}")
    host, sep, path = rest.partition("/")
    if not sep or not path or not ("." in host or ":" in host or host == "localhost"):
        raise ValueError(f"image reference {text!r} must name its registry (host[:port]/repository)")
    tag = None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, _, tag = path.rpartition(":")
    if not re.fullmatch(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*", path):
        raise ValueError(f"invalid repository name in image reference {text!r}")
    return Reference(registry=host, repository=path, tag=tag or None, digest=digest or None)


def is_loopback(registry: str) -> bool:
    """A registry on this machine (``localhost``, ``127.x``, ``[::1]``): plain HTTP by default, as docker treats it."""
    host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
    return host == "localhost" or host.startswith("127.") or host in ("[::1]", "::1")
