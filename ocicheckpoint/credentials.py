"""Registry credentials as Kubernetes carries them: a ``kubernetes.io/dockerconfigjson`` Secret.

Why this format and no other: it is what ``imagePullSecrets`` hold, what ``kubectl create secret
docker-registry`` writes and what a kubelet reads, so one Secret serves the agents' pushes, the
stand-in nodes' pulls and a real kubelet's pulls alike. A ``.dockerconfigjson`` is
``{"auths": {"<registry host>": {...}}}`` where an entry carries either ``auth`` (base64 of
``user:password``) or ``username``/``password``, and may carry an ``identitytoken`` (an OAuth2
refresh token the registry's token server exchanges for access tokens). Entries are chosen by
registry host, the way the kubelet's keyring does for a host without a path (a key written as a
URL, ``https://host/v1/``, names its host). A person's own ``docker login`` file (``~/.docker/config.json``,
what ``kubectl migrate inspect --from-registry`` pulls with) is the same document; its credential
helpers (``credsStore``, ``credHelpers``) are not run.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

SECRET_TYPE_DOCKERCONFIGJSON: Final = "kubernetes.io/dockerconfigjson"
DOCKERCONFIGJSON_KEY: Final = ".dockerconfigjson"
DOCKER_CONFIG_ENV: Final = "DOCKER_CONFIG"  # the directory of a user's docker config.json
DOCKER_CONFIG_FILE: Final = "config.json"
# Docker Hub's historical names for itself: a key written for one must match the others.
_DOCKER_HUB_ALIASES: Final = frozenset({"index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})
_DOCKER_HUB: Final = "docker.io"


class CredentialsError(ValueError):
    """A docker config that cannot be read (not JSON, a bad ``auth`` field)."""


@dataclass(frozen=True, kw_only=True)
class Credentials:
    """What one registry host is asked with: a user and password, and/or an identity (refresh) token."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)

    @property
    def has_password(self) -> bool:
        return bool(self.username or self.password)

    def header(self) -> str:
        """``Authorization: Basic ...`` for a registry (or token server) that asks for Basic."""
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return f"Basic {token}"


def registry_host(key: str) -> str:
    """The registry host a docker config key names: ``https://host:port/v1/`` and ``host:port`` alike."""
    key = key.strip()
    host = urlsplit(key).netloc if "://" in key else key.split("/", 1)[0]
    host = host.lower()
    return _DOCKER_HUB if host in _DOCKER_HUB_ALIASES else host


def _entry(host: str, raw: Any) -> Credentials:
    if not isinstance(raw, Mapping):
        raise CredentialsError(f"auths[{host!r}] is not an object")
    username, password = str(raw.get("username") or ""), str(raw.get("password") or "")
    if auth := raw.get("auth"):
        try:
            decoded = base64.b64decode(str(auth), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise CredentialsError(f"auths[{host!r}].auth is not base64 of user:password") from exc
        user, sep, secret = decoded.partition(":")
        if not sep:
            raise CredentialsError(f"auths[{host!r}].auth does not decode to user:password")
        username, password = user, secret
    return Credentials(username=username, password=password, identity_token=str(raw.get("identitytoken") or ""))


@dataclass(frozen=True, kw_only=True)
class DockerConfig:
    """The ``auths`` of one or more docker configs, keyed by registry host."""

    auths: Mapping[str, Credentials] = field(default_factory=dict)

    def for_registry(self, host: str) -> Credentials | None:
        """The credentials for ``host`` (``host:port``), or None: ask anonymously."""
        return self.auths.get(registry_host(host))

    def merged(self, other: DockerConfig) -> DockerConfig:
        """Both configs' entries; ours win on the same host (a pod's first imagePullSecret wins, like the kubelet)."""
        return DockerConfig(auths={**other.auths, **self.auths})

    def to_json(self) -> str:
        """A ``.dockerconfigjson`` document (``auth`` plus the split fields, as ``kubectl create secret`` writes)."""
        auths: dict[str, dict[str, str]] = {}
        for host, cred in self.auths.items():
            entry: dict[str, str] = {}
            if cred.has_password:
                entry = {
                    "username": cred.username,
                    "password": cred.password,
                    "auth": base64.b64encode(f"{cred.username}:{cred.password}".encode()).decode(),
                }
            if cred.identity_token:
                entry["identitytoken"] = cred.identity_token
            auths[host] = entry
        return json.dumps({"auths": auths}, indent=1, sort_keys=True)


def parse_docker_config(text: str | bytes) -> DockerConfig:
    """A ``.dockerconfigjson`` document (``{"auths": {...}}``)."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise CredentialsError(f"not a docker config (JSON): {exc}") from None
    auths = doc.get("auths") if isinstance(doc, Mapping) else None
    if not isinstance(auths, Mapping):
        raise CredentialsError('a docker config needs an "auths" object')
    return DockerConfig(auths={registry_host(key): _entry(key, raw) for key, raw in auths.items()})


def default_docker_config_path() -> Path:
    """Where docker (and crane, skopeo's fallback) keep a user's registry logins: ``$DOCKER_CONFIG/config.json``,
    else ``~/.docker/config.json``."""
    directory = os.environ.get(DOCKER_CONFIG_ENV)
    return (Path(directory) if directory else Path.home() / ".docker") / DOCKER_CONFIG_FILE


def load_docker_config(path: Path) -> DockerConfig:
    """A docker config file, e.g. a ``kubernetes.io/dockerconfigjson`` Secret's key mounted as a file."""
    return parse_docker_config(path.read_bytes())


def from_secret(secret: Mapping[str, Any]) -> DockerConfig:
    """A Secret as the API server returns it (``type``, base64 ``data``); other types hold no registry credentials."""
    if secret.get("type") != SECRET_TYPE_DOCKERCONFIGJSON:
        return DockerConfig()
    raw = (secret.get("data") or {}).get(DOCKERCONFIGJSON_KEY)
    if not raw:
        return DockerConfig()
    return parse_docker_config(base64.b64decode(raw))
