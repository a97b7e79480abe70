"""The local registry's token server: who may pull, push and delete which repository.

Why a token server and not ``htpasswd``: distribution's ``htpasswd`` auth grants every user
every repository, so it cannot say "the agents push and delete checkpoints, restored pods only
pull them, nodes only read the cluster's own images", which is the point of authenticating a
registry that holds process memory. ``auth: token`` delegates that decision to a server like
this one, as Docker Hub, GHCR, Harbor and GitLab do: a client that gets ``401`` asks
``GET /token?service=...&scope=repository:<name>:<actions>`` with Basic credentials, and gets an
RS256 JWT the registry verifies against ``rootcertbundle``. The claims follow distribution 2.8's
``registry/auth/token/token.go`` (the version Debian ships): ``iss`` must equal the registry's
``issuer``, ``aud`` (one string) its ``service``, ``exp``/``nbf`` are checked with 60 s leeway, and
``access`` lists ``{type, name, actions}``; the signing key is found through the header's ``x5c``,
whose certificate must chain to ``rootcertbundle`` (here it *is* the bundle: self-signed).

Users (generated at ``localcluster up`` into ``<state>/registry-auth/``, each with a random
password, and a ``<user>.dockerconfigjson`` beside it):

* ``podmigrate-push``: pull, push, delete on the checkpoint repository (the node agents).
* ``podmigrate-pull``: pull on the checkpoint repository (restored pods' ``imagePullSecrets``).
* ``cluster-images``: pull, push on the images the cluster builds (test images, pause,
  podmigrate's own image): what ``up`` and ``make image`` push with.
* ``node``: pull on those same images, as every node's own credentials (a stand-in node's
  ``--registry-credentials``, a real kubelet's ``<root-dir>/config.json``, the documented
  node-level credentials of a kubelet). Nodes must not read checkpoints with their own
  credentials, otherwise a restored pod would pull without its ``imagePullSecrets`` and the
  tests would prove nothing about them; and anonymous pull is refused everywhere, so the
  workloads' images need some credentials: a node's is where a private registry's usually are.

Anonymous requests get a token with no access (the registry then answers 401
``insufficient_scope``), save one: pulling the real nodes' sandbox image ``podmigrate/pause``,
which containerd pulls on its own, without any credentials, as it pulls the public
``registry.k8s.io/pause`` in a real cluster. Wrong credentials get 401 from this server.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import hmac
import json
import os
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from ocicheckpoint.credentials import (
    DOCKERCONFIGJSON_KEY,
    SECRET_TYPE_DOCKERCONFIGJSON,
    Credentials,
    DockerConfig,
    load_docker_config,
)
from ocicheckpoint.registry import parse_challenge

NAME: Final = "registry-auth"  # the process's name (pid file, log)
SERVICE: Final = "podmigrate-local-registry"
ISSUER: Final = "podmigrate-local-registry-auth"
TOKEN_PATH: Final = "/token"
TOKEN_SECONDS: Final = 300
USERS_FILE: Final = "users.json"
KEY_FILE: Final = "signing-key.pem"
CERT_FILE: Final = "signing-cert.pem"  # also the registry's rootcertbundle
DOCKERCONFIG_SUFFIX: Final = ".dockerconfigjson"

CHECKPOINT_REPOSITORY: Final = "podmigrate-checkpoints"
CLUSTER_IMAGES: Final = "podmigrate"  # podmigrate (make image), podmigrate/counter, podmigrate/warmup, podmigrate/pause
PUSH_USER: Final = "podmigrate-push"
PULL_USER: Final = "podmigrate-pull"
IMAGES_USER: Final = "cluster-images"
NODE_USER: Final = "node"
ANONYMOUS: Final = ""
PAUSE_REPOSITORY: Final = "podmigrate/pause"  # localcluster.realnode's sandbox image

# user -> [(repository prefix, actions)]: a prefix matches itself and what is below it ("<prefix>/...").
POLICY: Final[Mapping[str, Sequence[tuple[str, frozenset[str]]]]] = {
    PUSH_USER: [(CHECKPOINT_REPOSITORY, frozenset({"pull", "push", "delete"}))],
    PULL_USER: [(CHECKPOINT_REPOSITORY, frozenset({"pull"}))],
    IMAGES_USER: [(CLUSTER_IMAGES, frozenset({"pull", "push"}))],
    NODE_USER: [(CLUSTER_IMAGES, frozenset({"pull"}))],
    # The one anonymous read: the sandbox image. containerd pulls it itself, without the kubelet's
    # credentials, the way it pulls registry.k8s.io/pause, which is public.
    ANONYMOUS: [(PAUSE_REPOSITORY, frozenset({"pull"}))],
}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hash(password: str, salt: bytes) -> str:
    # Passwords are 32 random bytes: a salted SHA-256 is enough (no dictionary to slow down).
    return hashlib.sha256(salt + password.encode()).hexdigest()


def allowed(*, user: str | None, repository: str, wanted: Sequence[str]) -> list[str]:
    """The actions of ``wanted`` that ``user`` (None: anonymous) holds on ``repository``, in ``wanted``'s order."""
    held: set[str] = set()
    for prefix, actions in POLICY.get(user or "", ()):
        if repository == prefix or repository.startswith(prefix + "/"):
            held |= actions
    return [a for a in wanted if a in held]


@dataclass(frozen=True, kw_only=True)
class Paths:
    directory: Path

    @property
    def users(self) -> Path:
        return self.directory / USERS_FILE

    @property
    def key(self) -> Path:
        return self.directory / KEY_FILE

    @property
    def cert(self) -> Path:
        return self.directory / CERT_FILE

    def dockerconfig(self, user: str) -> Path:
        return self.directory / f"{user}{DOCKERCONFIG_SUFFIX}"

    def credentials(self, user: str) -> DockerConfig:
        return load_docker_config(self.dockerconfig(user))


def prepare(*, directory: Path, registry: str) -> Paths:
    """Signing key and self-signed certificate, users with fresh passwords, one dockerconfigjson per user."""
    paths = Paths(directory=directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    old = os.umask(0o077)
    try:
        paths.key.write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        users: dict[str, dict[str, str]] = {}
        for user in (u for u in POLICY if u != ANONYMOUS):
            password, salt = secrets.token_urlsafe(32), secrets.token_bytes(16)
            users[user] = {"salt": salt.hex(), "sha256": _hash(password, salt)}
            doc = DockerConfig(auths={registry: Credentials(username=user, password=password)})
            paths.dockerconfig(user).write_text(doc.to_json() + "\n")
        paths.users.write_text(json.dumps(users, indent=1) + "\n")
    finally:
        os.umask(old)
    paths.cert.chmod(0o644)  # the registry reads it; it is public
    return paths


class TokenIssuer:
    """Checks Basic credentials against the users file and signs tokens for what the policy allows."""

    def __init__(self, *, paths: Paths, service: str = SERVICE, issuer: str = ISSUER, seconds: int = TOKEN_SECONDS) -> None:
        key = serialization.load_pem_private_key(paths.key.read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"{paths.key} is not an RSA key")
        self._key = key
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        self._x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        self._users: dict[str, dict[str, str]] = json.loads(paths.users.read_text())
        self.service, self.issuer, self.seconds = service, issuer, seconds

    def check(self, username: str, password: str) -> bool:
        entry = self._users.get(username)
        if entry is None:
            _hash(password, b"0" * 16)  # the same work for an unknown user
            return False
        return hmac.compare_digest(entry["sha256"], _hash(password, bytes.fromhex(entry["salt"])))

    def token(self, *, user: str | None, scopes: Sequence[str]) -> str:
        access: list[dict[str, Any]] = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind != "repository" or not name:
                continue  # registry:catalog:* and the like: nobody here needs them
            granted = allowed(user=user, repository=name, wanted=actions.split(","))
            if granted:
                access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {
            "iss": self.issuer, "sub": user or "", "aud": self.service, "exp": now + self.seconds,
            "nbf": now - 1, "iat": now, "jti": uuid.uuid4().hex, "access": access,
        }  # fmt: skip
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"


def _basic(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except ValueError:
        return None
    return (user, password) if sep else None


def app(issuer: TokenIssuer) -> web.Application:
    """``GET /token?service=&scope=...`` (Basic or anonymous) -> ``{"token", "access_token", "expires_in", "issued_at"}``."""

    async def token(request: web.Request) -> web.Response:
        user: str | None = None
        if auth := request.headers.get("Authorization"):
            creds = _basic(auth)
            if creds is None or not issuer.check(*creds):
                return web.json_response(
                    {"errors": [{"code": "UNAUTHORIZED", "message": "wrong user name or password"}]},
                    status=401,
                    headers={"WWW-Authenticate": f'Basic realm="{issuer.service}"'},
                )
            user = creds[0]
        service = request.query.get("service", issuer.service)
        if service != issuer.service:
            return web.json_response({"errors": [{"code": "DENIED", "message": f"unknown service {service!r}"}]}, status=400)
        scopes = [s for value in request.query.getall("scope", []) for s in value.split(" ") if s]
        signed = issuer.token(user=user, scopes=scopes)
        issued = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        body = {"token": signed, "access_token": signed, "expires_in": issuer.seconds, "issued_at": issued}
        return web.json_response(body)

    application = web.Application()
    application.router.add_get(TOKEN_PATH, token)
    return application


def registry_auth_config(*, paths: Paths, address: str) -> str:
    """The ``auth:`` section of the registry's configuration (distribution's ``auth: token``)."""
    return (
        "auth:\n  token:\n"
        f"    realm: http://{address}{TOKEN_PATH}\n"
        f"    service: {SERVICE}\n"
        f"    issuer: {ISSUER}\n"
        f"    rootcertbundle: {paths.cert}\n"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="registry-auth", description="The local registry's token server.")
    p.add_argument("--name", default=NAME, help="process name (for localcluster's process bookkeeping)")
    p.add_argument("--dir", required=True, type=Path, help="where prepare() wrote the key, certificate and users")
    p.add_argument("--listen", required=True, help="host:port (loopback)")
    args = p.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    web.run_app(app(TokenIssuer(paths=Paths(directory=args.dir))), host=host, port=int(port), access_log=None, print=None)


if __name__ == "__main__":
    main()


# --- what podmigrate's install gets of it -------------------------------------------------------------------
AGENT_SECRET: Final = "podmigrate-registry"  # manifests/deploy/agent.yaml mounts it: push, pull, delete
PULL_SECRET: Final = "podmigrate-checkpoint-pull"  # migrator/pullsecrets.py copies it: pull only


def secret_manifests(*, paths: Paths, namespace: str) -> list[dict[str, Any]]:
    """The two ``kubernetes.io/dockerconfigjson`` Secrets an operator creates for podmigrate (docs/registry.md)."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": SECRET_TYPE_DOCKERCONFIGJSON,
            "metadata": {"name": name, "namespace": namespace},
            "data": {DOCKERCONFIGJSON_KEY: base64.b64encode(paths.dockerconfig(user).read_bytes()).decode()},
        }
        for name, user in ((AGENT_SECRET, PUSH_USER), (PULL_SECRET, PULL_USER))
    ]


# --- for tests and scripts that talk to the registry with urllib ---------------------------------------------
def bearer_headers(*, registry: str, credentials: Credentials | None, scope: str, timeout: float = 10) -> dict[str, str]:
    """``Authorization: Bearer`` for ``scope`` (``repository:<name>:<actions>``), from the registry's own challenge.

    Raises ``urllib.error.HTTPError`` when the token server refuses the credentials.
    """
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{registry}/v2/", timeout=timeout):
            return {}  # the registry asks for nothing
    except urllib.error.HTTPError as exc:
        challenge = parse_challenge(exc.headers.get("WWW-Authenticate", ""))
    if challenge is None or challenge.scheme != "bearer":
        raise ValueError(f"the registry at {registry} did not answer with a Bearer challenge")
    query = urllib.parse.urlencode({"service": challenge.params.get("service", ""), "scope": scope})
    request = urllib.request.Request(f"{challenge.params['realm']}?{query}")
    if credentials is not None and credentials.has_password:
        request.add_header("Authorization", credentials.header())
    with opener.open(request, timeout=timeout) as resp:
        doc = json.loads(resp.read())
    return {"Authorization": f"Bearer {doc.get('token') or doc['access_token']}"}
