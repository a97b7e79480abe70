"""The auth middleware's decisions: who gets 401, 403 or through, in which namespace, and caching."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from node_agent.auth import CALLER_KEY, Caller, Decision, TtlCache, auth_middleware

GOOD = "good-token"
LIMITED = "limited-token"
REPO = "r:5000/checkpoints"
DIGEST = "@sha256:" + "a" * 64


class FakeReviewer:
    """Two users: "driver" may act everywhere, "limited" only in namespace "team-a"."""

    def __init__(self) -> None:
        self.authn_calls = 0
        self.authz_calls: list[tuple[str, str | None]] = []
        self.fail = False

    async def authenticate(self, token: str) -> Caller | None:
        self.authn_calls += 1
        if self.fail:
            raise OSError("API server unreachable")
        return {GOOD: Caller(username="driver"), LIMITED: Caller(username="limited")}.get(token)

    async def authorize(self, caller: Caller, *, namespace: str | None) -> Decision:
        self.authz_calls.append((caller.username, namespace))
        if caller.username == "driver" or namespace == "team-a":
            return Decision(allowed=True)
        return Decision(allowed=False, reason="RBAC: no rule")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def setup() -> AsyncIterator[tuple[TestClient, FakeReviewer, Clock]]:
    reviewer, clock = FakeReviewer(), Clock()

    async def echo(request: web.Request) -> web.Response:
        raw = await request.read()  # the middleware read it already: aiohttp hands out the same bytes again
        body = json.loads(raw) if raw else None
        return web.json_response({"caller": request[CALLER_KEY].username, "body": body})

    async def public(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(
        middlewares=[auth_middleware(reviewer=reviewer, public_paths={"/healthz"}, repository=REPO, ttl=30, clock=clock)]
    )
    app.router.add_post("/v1/checkpoint", echo)
    app.router.add_get("/v1/frozen", echo)
    app.router.add_delete("/v1/images", echo)
    app.router.add_delete("/v1/checkpoint", echo)
    app.router.add_post("/v1/volumes", echo)
    app.router.add_get("/healthz", public)
    client = TestClient(TestServer(app))
    await client.start_server()
    yield client, reviewer, clock
    await client.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_public_paths_need_no_token(setup: tuple[TestClient, FakeReviewer, Clock]) -> None:
    client, reviewer, _ = setup
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert reviewer.authn_calls == 0


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic Zm9vOmJhcg==", "Token good-token"])
async def test_missing_or_malformed_credentials_are_401(
    setup: tuple[TestClient, FakeReviewer, Clock], header: str | None
) -> None:
    client, reviewer, _ = setup
    headers = {"Authorization": header} if header is not None else {}
    resp = await client.post("/v1/checkpoint", json={"namespace": "default"}, headers=headers)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert "error" in await resp.json()
    assert reviewer.authn_calls == 0


async def test_invalid_token_is_401(setup: tuple[TestClient, FakeReviewer, Clock]) -> None:
    client, reviewer, _ = setup
    resp = await client.post("/v1/checkpoint", json={"namespace": "default"}, headers=bearer("forged"))
    assert resp.status == 401
    assert (await resp.json())["error"] == "invalid bearer token"
    assert reviewer.authz_calls == []


async def test_allowed_caller_reaches_the_handler_with_the_body_intact(setup: tuple[TestClient, FakeReviewer, Clock]) -> None:
    client, reviewer, _ = setup
    resp = await client.post("/v1/checkpoint", json={"namespace": "default", "pod": "p"}, headers=bearer(GOOD))
    assert resp.status == 200
    assert await resp.json() == {"caller": "driver", "body": {"namespace": "default", "pod": "p"}}
    assert reviewer.authz_calls == [("driver", "default")]


async def test_forbidden_is_403_with_a_one_line_reason(setup: tuple[TestClient, FakeReviewer, Clock]) -> None:
    client, _, _ = setup
    resp = await client.post("/v1/checkpoint", json={"namespace": "team-b"}, headers=bearer(LIMITED))
    assert resp.status == 403
    error = (await resp.json())["error"]
    assert "\n" not in error
    assert error == 'user "limited" may not update podmigrations/status (podmigrate.io) in namespace "team-b": RBAC: no rule'


async def test_authorization_is_asked_in_the_pods_namespace(setup: tuple[TestClient, FakeReviewer, Clock]) -> None:
    client, reviewer, _ = setup
    assert (await client.post("/v1/checkpoint", json={"namespace": "team-a"}, headers=bearer(LIMITED))).status == 200
    assert (await client.get("/v1/frozen?namespace=team-a&pod=x", headers=bearer(LIMITED))).status == 200
    assert (await client.get("/v1/frozen?namespace=team-b&pod=x", headers=bearer(LIMITED))).status == 403
    # No object with a namespace (a checkpoint aborted by id): asked cluster-wide, which "limited" is not allowed.
    resp = await client.delete("/v1/checkpoint", json={"request_id": "x"}, headers=bearer(LIMITED))
    assert resp.status == 403
    assert "cluster-wide" in (await resp.json())["error"]
    assert reviewer.authz_calls == [("limited", "team-a"), ("limited", "team-b"), ("limited", None)]


async def test_an_images_namespace_is_read_from_its_repository_not_from_the_body(
    setup: tuple[TestClient, FakeReviewer, Clock],
) -> None:
    client, reviewer, _ = setup
    mine = {"image": f"{REPO}/team-a/p{DIGEST}", "namespace": "team-b"}
    assert (await client.delete("/v1/images", json=mine, headers=bearer(LIMITED))).status == 200
    theirs = {"image": f"{REPO}/team-b/p{DIGEST}", "namespace": "team-a"}  # the body's namespace is ignored
    resp = await client.delete("/v1/images", json=theirs, headers=bearer(LIMITED))
    assert resp.status == 403
    assert 'namespace "team-b"' in (await resp.json())["error"]
    assert reviewer.authz_calls == [("limited", "team-a"), ("limited", "team-b")]


@pytest.mark.parametrize(
    "image", [f"r:5000/elsewhere/team-a/p{DIGEST}", f"other:5000/checkpoints/team-a/p{DIGEST}", f"{REPO}/team-a{DIGEST}"]
)
async def test_images_outside_the_checkpoint_repository_are_refused_before_any_review(
    setup: tuple[TestClient, FakeReviewer, Clock], image: str
) -> None:
    client, reviewer, _ = setup
    resp = await client.delete("/v1/images", json={"image": image}, headers=bearer(GOOD))
    assert resp.status == 403
    assert "checkpoint repository" in (await resp.json())["error"]
    assert reviewer.authz_calls == []


async def test_pushes_and_stagings_only_under_the_pods_own_namespace(setup: tuple[TestClient, FakeReviewer, Clock]) -> None:
    client, _, _ = setup
    ok = {"namespace": "team-a", "pod": "p", "image_repository": f"{REPO}/team-a/p"}
    assert (await client.post("/v1/checkpoint", json=ok, headers=bearer(GOOD))).status == 200
    for repository in (f"{REPO}/team-b/p", "evil:5000/exfiltrate/team-a/p"):
        body = {**ok, "image_repository": repository}
        assert (await client.post("/v1/checkpoint", json=body, headers=bearer(GOOD))).status == 403
    stage = {"namespace": "team-a", "pod": "p", "image": f"{REPO}/team-b/p{DIGEST}"}
    assert (await client.post("/v1/volumes", json=stage, headers=bearer(GOOD))).status == 403


async def test_positive_reviews_are_cached_for_the_ttl(setup: tuple[TestClient, FakeReviewer, Clock]) -> None:
    client, reviewer, clock = setup
    for _ in range(3):
        assert (await client.post("/v1/checkpoint", json={"namespace": "default"}, headers=bearer(GOOD))).status == 200
    assert reviewer.authn_calls == 1
    assert len(reviewer.authz_calls) == 1
    clock.now += 31
    assert (await client.post("/v1/checkpoint", json={"namespace": "default"}, headers=bearer(GOOD))).status == 200
    assert reviewer.authn_calls == 2
    assert len(reviewer.authz_calls) == 2


async def test_negative_reviews_are_not_cached(setup: tuple[TestClient, FakeReviewer, Clock]) -> None:
    client, reviewer, _ = setup
    for _ in range(2):
        assert (await client.post("/v1/checkpoint", json={"namespace": "x"}, headers=bearer(LIMITED))).status == 403
        assert (await client.post("/v1/checkpoint", json={}, headers=bearer("forged"))).status == 401
    assert len(reviewer.authz_calls) == 2
    assert reviewer.authn_calls == 3  # "limited" authenticated once (cached), "forged" twice


async def test_review_failure_is_503(setup: tuple[TestClient, FakeReviewer, Clock]) -> None:
    client, reviewer, _ = setup
    reviewer.fail = True
    resp = await client.post("/v1/checkpoint", json={"namespace": "default"}, headers=bearer(GOOD))
    assert resp.status == 503


def test_ttl_cache_bounds_its_size() -> None:
    clock = Clock()
    cache = TtlCache(ttl=10, max_entries=3, clock=clock)
    for i in range(5):
        cache.put(i, i)
    assert sum(cache.get(i) is not None for i in range(5)) == 3
    clock.now += 11
    assert cache.get(4) is None
