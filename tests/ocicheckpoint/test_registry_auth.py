"""The registry client's authentication against a registry that behaves like distribution's ``auth: token``.

The fake registry verifies tokens the way distribution 2.8 does (``registry/auth/token/token.go``):
RS256 over header.claims, key from the ``x5c`` certificate (which must be the trusted one), ``iss``
and ``aud`` equal to its configuration, ``exp``/``nbf``, and the ``access`` claim must hold the
actions the request needs (GET/HEAD pull; POST/PUT/PATCH pull+push; DELETE delete). The tokens
come from ``localcluster.registryauth``, the local cluster's token server, so this also checks
that its tokens are what such a registry accepts.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from localcluster import registryauth
from ocicheckpoint import names, registry
from ocicheckpoint.credentials import Credentials, DockerConfig
from ocicheckpoint.image import Descriptor, sha256_bytes

CKPT = "podmigrate-checkpoints/ns/pod"


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _needed(method: str) -> set[str]:
    return {"GET": {"pull"}, "HEAD": {"pull"}, "DELETE": {"delete"}}.get(method, {"pull", "push"})


@dataclass
class FakeRegistry:
    """Distribution's token auth in front of an in-memory store; records what it was sent."""

    cert: x509.Certificate
    realm: str = ""
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[tuple[str, str], bytes] = field(default_factory=dict)
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, auth scheme ("" = none)

    def _verify(self, token: str) -> dict[str, Any] | None:
        try:
            head, claims, sig = token.split(".")
            header = json.loads(_unb64(head))
            leaf = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))
            if leaf != self.cert or header["alg"] != "RS256":
                return None
            key = leaf.public_key()
            assert isinstance(key, rsa.RSAPublicKey)
            key.verify(_unb64(sig), f"{head}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())
            body = json.loads(_unb64(claims))
        except Exception:
            return None
        now = time.time()
        if body["iss"] != registryauth.ISSUER or body["aud"] != registryauth.SERVICE:
            return None
        if not body["nbf"] - 60 <= now <= body["exp"] + 60 or not isinstance(body["aud"], str):
            return None
        return body

    def _challenge(self, repository: str, actions: set[str], *, error: str = "") -> web.Response:
        scope = f"repository:{repository}:{','.join(sorted(actions))}"
        value = f'Bearer realm="{self.realm}",service="{registryauth.SERVICE}",scope="{scope}"'
        if error:
            value += f',error="{error}"'
        body = {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
        return web.json_response(body, status=401, headers={"WWW-Authenticate": value})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        self.requests.append((request.method, request.path, auth.partition(" ")[0]))
        m = re.fullmatch(r"/v2/(.+)/(blobs/uploads/[^/]*|blobs|manifests)(?:/([^/]+))?", request.path)
        if request.path == "/v2/":
            repository, kind, ref = "", "base", ""
        elif m is None:
            return web.Response(status=404)
        else:
            repository, kind, ref = m[1], m[2], m[3] or ""
        needed = _needed(request.method) if repository else set()
        claims = self._verify(auth.removeprefix("Bearer ")) if auth.startswith("Bearer ") else None
        if claims is None:
            return self._challenge(repository, needed)
        held = {a for entry in claims["access"] if entry["name"] == repository for a in entry["actions"]}
        if not needed <= held:
            return self._challenge(repository, needed, error="insufficient_scope")
        if kind == "base":
            return web.json_response({})
        if kind == "blobs":
            blob = self.blobs.get(ref)
            if blob is None:
                return web.Response(status=404)
            return web.Response(body=None if request.method == "HEAD" else blob, headers={"Content-Length": str(len(blob))})
        if kind.startswith("blobs/uploads"):
            if request.method == "POST":
                return web.Response(status=202, headers={"Location": f"/v2/{repository}/blobs/uploads/{uuid.uuid4()}"})
            data = await request.read()
            self.blobs[request.query["digest"]] = data
            return web.Response(status=201)
        if request.method == "PUT":
            data = await request.read()
            self.manifests[(repository, ref)] = self.manifests[(repository, sha256_bytes(data))] = data
            return web.Response(status=201, headers={"Docker-Content-Digest": sha256_bytes(data)})
        if request.method == "DELETE":
            return web.Response(status=202 if self.manifests.pop((repository, ref), None) else 404)
        found = self.manifests.get((repository, ref))
        if found is None:
            return web.Response(status=404)
        return web.Response(body=found, content_type=names.MEDIA_TYPE_OCI_MANIFEST)


@dataclass
class Setup:
    host: str
    fake: FakeRegistry
    users: dict[str, DockerConfig]
    token_requests: list[dict[str, Any]]
    session: aiohttp.ClientSession
    issuer: registryauth.TokenIssuer

    def client(self, user: str | None) -> registry.RegistryClient:
        creds = self.users[user].for_registry(self.host) if user else None
        return registry.RegistryClient(host=self.host, session=self.session, plain_http=True, credentials=creds)


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    paths = registryauth.prepare(directory=tmp_path / "auth", registry="placeholder")
    issuer = registryauth.TokenIssuer(paths=paths)
    fake = FakeRegistry(cert=x509.load_pem_x509_certificate(paths.cert.read_bytes()))
    token_requests: list[dict[str, Any]] = []
    token_app = registryauth.app(issuer)

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        token_requests.append({"scope": request.query.getall("scope", []), "auth": "Authorization" in request.headers})
        return await handler(request)

    token_app.middlewares.append(record)
    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/v2/{tail:.*}", fake.handle)
    app.add_subapp("/auth", token_app)
    server = TestServer(app)
    await server.start_server()
    host = f"{server.host}:{server.port}"
    fake.realm = f"http://{host}/auth{registryauth.TOKEN_PATH}"
    # The users' files name the registry they were generated for; rewrite them for this server's address.
    users = {
        user: DockerConfig(auths={host: paths.credentials(user).for_registry("placeholder")})  # type: ignore[dict-item]
        for user in (registryauth.PUSH_USER, registryauth.PULL_USER, registryauth.IMAGES_USER, registryauth.NODE_USER)
    }
    async with aiohttp.ClientSession() as session:
        yield Setup(host=host, fake=fake, users=users, token_requests=token_requests, session=session, issuer=issuer)
    await server.close()


def _blob(data: bytes) -> Descriptor:
    return Descriptor(media_type="application/octet-stream", digest=sha256_bytes(data), size=len(data))


async def _push(client: registry.RegistryClient, tmp_path: Path, *, repository: str = CKPT) -> tuple[str, bytes]:
    layer = tmp_path / "layer"
    layer.write_bytes(b"layer " * 10000)
    config = b'{"config": {}}'
    manifest = json.dumps({"schemaVersion": 2, "layers": [], "n": str(uuid.uuid4())}).encode()
    digest = await client.push_image(
        repository=repository, tag="t1", layers=[(_blob(layer.read_bytes()), layer)],
        config=_blob(config), config_bytes=config, manifest=manifest,
    )  # fmt: skip
    return digest, manifest


async def test_push_pull_delete_with_one_token_per_scope(setup: Setup, tmp_path: Path) -> None:
    client = setup.client(registryauth.PUSH_USER)
    digest, manifest = await _push(client, tmp_path)
    # (the first challenge, a HEAD's, asks for pull: the client asks for what it will need, pull,push, as well)
    push_tokens = [r for r in setup.token_requests if r["scope"][0] == f"repository:{CKPT}:pull,push"]
    assert len(push_tokens) == 1 and push_tokens[0]["auth"], "one Basic-authenticated token request for the whole push"
    assert len(setup.token_requests) == 1
    body, _, got = await client.get_manifest(repository=CKPT, reference=digest)
    assert (body, got) == (manifest, digest)
    assert len(setup.token_requests) == 1, "a pull,push token serves pulls too"
    assert await client.delete_manifest(repository=CKPT, digest=digest) is True
    assert setup.token_requests[-1]["scope"] == [f"repository:{CKPT}:delete"]


async def test_the_streamed_upload_is_sent_once_and_only_with_a_token(setup: Setup, tmp_path: Path) -> None:
    await _push(setup.client(registryauth.PUSH_USER), tmp_path)
    puts = [r for r in setup.fake.requests if r[0] == "PUT" and "/blobs/uploads/" in r[1]]
    assert len(puts) == 2 and all(scheme == "Bearer" for _, _, scheme in puts), setup.fake.requests


async def test_anonymous_pull_and_push_are_refused(setup: Setup, tmp_path: Path) -> None:
    digest, _ = await _push(setup.client(registryauth.PUSH_USER), tmp_path)
    anonymous = setup.client(None)
    with pytest.raises(registry.RegistryError) as pulled:
        await anonymous.get_manifest(repository=CKPT, reference=digest)
    assert pulled.value.status == 401
    with pytest.raises(registry.RegistryError) as pushed:
        await _push(anonymous, tmp_path)
    assert pushed.value.status == 401
    assert not any(r["auth"] for r in setup.token_requests[1:]), "anonymous token requests carry no credentials"


async def test_wrong_credentials_are_refused_by_the_token_server(setup: Setup) -> None:
    client = registry.RegistryClient(
        host=setup.host, session=setup.session, plain_http=True,
        credentials=Credentials(username=registryauth.PULL_USER, password="wrong"),
    )  # fmt: skip
    with pytest.raises(registry.RegistryError, match=r"token server .* refused") as refused:
        await client.get_manifest(repository=CKPT, reference="t1")
    assert refused.value.status == 401


async def test_pull_only_credentials_pull_but_cannot_push_or_delete(setup: Setup, tmp_path: Path) -> None:
    digest, manifest = await _push(setup.client(registryauth.PUSH_USER), tmp_path)
    puller = setup.client(registryauth.PULL_USER)
    assert (await puller.get_manifest(repository=CKPT, reference=digest))[0] == manifest
    with pytest.raises(registry.RegistryError) as pushed:
        await _push(puller, tmp_path)
    assert pushed.value.status == 401
    with pytest.raises(registry.RegistryError) as deleted:
        await puller.delete_manifest(repository=CKPT, digest=digest)
    assert deleted.value.status == 401
    # and the node's and the image pusher's credentials do not reach checkpoints at all
    for user in (registryauth.NODE_USER, registryauth.IMAGES_USER):
        with pytest.raises(registry.RegistryError):
            await setup.client(user).get_manifest(repository=CKPT, reference=digest)


async def test_an_expiring_token_is_renewed(setup: Setup, tmp_path: Path) -> None:
    setup.issuer.seconds = 2  # renewed after half its life (shorter than TOKEN_RENEW_BEFORE_S)
    client = setup.client(registryauth.PUSH_USER)
    digest, _ = await _push(client, tmp_path)
    await client.get_manifest(repository=CKPT, reference=digest)
    assert len(setup.token_requests) == 1
    await asyncio.sleep(1.1)
    await client.get_manifest(repository=CKPT, reference=digest)
    assert len(setup.token_requests) == 2


async def test_basic_challenge_and_access_token_and_identity_token(tmp_path: Path) -> None:
    """A registry that asks for Basic; a token server that answers ``access_token`` to an OAuth2 refresh token."""
    seen: list[str] = []

    async def basic_registry(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != Credentials(username="u", password="p").header():
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="registry"'})
        return web.Response(body=b"{}", content_type=names.MEDIA_TYPE_OCI_MANIFEST)

    forms: list[dict[str, str]] = []

    async def oauth(request: web.Request) -> web.Response:
        forms.append(dict(await request.post()))  # type: ignore[arg-type]
        return web.json_response({"access_token": "opaque", "expires_in": 120})

    async def bearer_registry(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer opaque":
            realm = f"http://{request.host}/oauth"
            return web.Response(status=401, headers={"WWW-Authenticate": f'Bearer realm="{realm}",service="svc"'})
        return web.Response(body=b"{}", content_type=names.MEDIA_TYPE_OCI_MANIFEST)

    app = web.Application()
    app.router.add_get("/v2/basic/manifests/{ref}", basic_registry)
    app.router.add_get("/v2/bearer/manifests/{ref}", bearer_registry)
    app.router.add_post("/oauth", oauth)
    server = TestServer(app)
    await server.start_server()
    host = f"{server.host}:{server.port}"
    try:
        async with aiohttp.ClientSession() as session:
            basic = registry.RegistryClient(
                host=host, session=session, plain_http=True, credentials=Credentials(username="u", password="p")
            )
            await basic.get_manifest(repository="basic", reference="t")
            await basic.get_manifest(repository="basic", reference="t")
            assert seen[0] == "" and seen[1:] == [Credentials(username="u", password="p").header()] * 2
            oauth_client = registry.RegistryClient(
                host=host, session=session, plain_http=True, credentials=Credentials(identity_token="refresh")
            )
            await oauth_client.get_manifest(repository="bearer", reference="t")
            assert forms == [{
                "grant_type": "refresh_token", "refresh_token": "refresh", "client_id": registry.OAUTH_CLIENT_ID,
                "scope": "repository:bearer:pull", "service": "svc",
            }]  # fmt: skip
    finally:
        await server.close()


def test_challenges_parse() -> None:
    parsed = registry.parse_challenge(
        'Bearer realm="https://a/token",service="reg",scope="repository:x:pull repository:y:pull",error="insufficient_scope"'
    )
    assert parsed == registry.Challenge(
        scheme="bearer",
        params={
            "realm": "https://a/token",
            "service": "reg",
            "scope": "repository:x:pull repository:y:pull",
            "error": "insufficient_scope",
        },
    )
    assert registry.parse_challenge("Basic realm=registry") == registry.Challenge(scheme="basic", params={"realm": "registry"})
    assert registry.parse_challenge("") is None


def test_the_token_servers_policy_matches_whole_path_segments() -> None:
    allowed = registryauth.allowed
    assert allowed(user=registryauth.IMAGES_USER, repository="podmigrate/counter", wanted=["pull", "push"]) == ["pull", "push"]
    assert allowed(user=registryauth.IMAGES_USER, repository="podmigrate-checkpoints/ns/p", wanted=["pull", "push"]) == []
    assert allowed(user=registryauth.PUSH_USER, repository="podmigrate-checkpoints/ns/p", wanted=["delete"]) == ["delete"]
    assert allowed(user=registryauth.PUSH_USER, repository="podmigrate-checkpointsX/p", wanted=["pull"]) == []
    assert allowed(user=None, repository="podmigrate/pause", wanted=["pull", "push"]) == ["pull"]
    assert allowed(user=None, repository="podmigrate/counter", wanted=["pull"]) == []
