"""Counting an API client's requests (``kubeclient.connecting``): by verb and resource, as the audit log names them."""

from __future__ import annotations

from typing import Any

import pytest

from kubeclient.connecting import count_requests, request_kind


@pytest.mark.parametrize(
    ("method", "url", "query", "expected"),
    [
        ("GET", "https://api:6443/api/v1/pods", None, ("list", "pods")),
        ("GET", "https://api:6443/api/v1/pods", [("watch", True)], ("watch", "pods")),
        ("GET", "https://api:6443/api/v1/namespaces/ns/pods", [("fieldSelector", "spec.nodeName=n")], ("list", "pods")),
        ("GET", "https://api:6443/api/v1/namespaces/ns/pods/p", None, ("get", "pods")),
        ("PATCH", "https://api:6443/api/v1/namespaces/ns/pods/p/status", None, ("patch", "pods/status")),
        ("POST", "https://api:6443/api/v1/namespaces/ns/pods/p/eviction", None, ("create", "pods/eviction")),
        ("GET", "https://api:6443/api/v1/namespaces/ns", None, ("get", "namespaces")),
        ("GET", "https://api:6443/api/v1/nodes", [("watch", "true")], ("watch", "nodes")),
        ("POST", "https://api:6443/apis/podmigrate.io/v1alpha1/namespaces/ns/podmigrations", None, ("create", "podmigrations")),
        ("PUT", "https://api:6443/apis/coordination.k8s.io/v1/namespaces/ns/leases/l", None, ("update", "leases")),
        (
            "DELETE",
            "https://api:6443/apis/podmigrate.io/v1alpha1/namespaces/ns/podcheckpoints/c",
            None,
            ("delete", "podcheckpoints"),
        ),
    ],
)
def test_request_kind(method: str, url: str, query: Any, expected: tuple[str, str]) -> None:
    assert request_kind(method, url, query) == expected


async def test_count_requests_sees_every_request_and_passes_it_on() -> None:
    sent: list[tuple[Any, ...]] = []

    class Rest:
        async def request(self, method: str, url: str, query_params: Any = None, **kwargs: Any) -> str:
            sent.append((method, url, query_params, kwargs))
            return "response"

    class Api:
        rest_client = Rest()

    counted: list[tuple[str, str]] = []
    count_requests(Api(), lambda verb, resource: counted.append((verb, resource)))  # type: ignore[arg-type]
    assert await Api.rest_client.request("GET", "https://a/api/v1/nodes", [("watch", True)], _request_timeout=5) == "response"
    assert counted == [("watch", "nodes")]
    assert sent == [("GET", "https://a/api/v1/nodes", [("watch", True)], {"_request_timeout": 5})]
