"""Docker config parsing (``ocicheckpoint.credentials``): what a ``kubernetes.io/dockerconfigjson`` Secret holds."""

from __future__ import annotations

import base64
import json

import pytest

from ocicheckpoint.credentials import (
    DOCKERCONFIGJSON_KEY,
    SECRET_TYPE_DOCKERCONFIGJSON,
    Credentials,
    CredentialsError,
    DockerConfig,
    from_secret,
    parse_docker_config,
    registry_host,
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_auth_field_username_password_and_identity_token() -> None:
    config = parse_docker_config(
        json.dumps(
            {
                "auths": {
                    "registry.example:5000": {"auth": b64("agent:s3cr:et")},
                    "https://other.example/v1/": {"username": "u", "password": "p"},
                    "oauth.example": {"identitytoken": "refresh-me"},
                }
            }
        )
    )
    assert config.for_registry("registry.example:5000") == Credentials(username="agent", password="s3cr:et")
    assert config.for_registry("other.example") == Credentials(username="u", password="p")
    assert config.for_registry("oauth.example") == Credentials(identity_token="refresh-me")
    assert config.for_registry("registry.example") is None, "the port is part of the host"
    assert config.for_registry("unknown.example") is None


def test_keys_are_hosts_whatever_way_they_are_written() -> None:
    assert registry_host("https://Registry.Example:5000/v2/") == "registry.example:5000"
    assert registry_host("registry.example/some/path") == "registry.example"
    assert registry_host("https://index.docker.io/v1/") == "docker.io"


def test_a_secret_from_the_api_server() -> None:
    doc = {"auths": {"127.0.0.1:5310": {"auth": b64("podmigrate-pull:pw")}}}
    secret = {"type": SECRET_TYPE_DOCKERCONFIGJSON, "data": {DOCKERCONFIGJSON_KEY: b64(json.dumps(doc))}}
    assert from_secret(secret).for_registry("127.0.0.1:5310") == Credentials(username="podmigrate-pull", password="pw")
    assert from_secret({"type": "Opaque", "data": {DOCKERCONFIGJSON_KEY: b64(json.dumps(doc))}}).auths == {}


def test_round_trip_and_merge_order() -> None:
    mine = DockerConfig(auths={"r.example": Credentials(username="a", password="1")})
    theirs = DockerConfig(auths={"r.example": Credentials(username="b", password="2"), "s.example": Credentials(username="c")})
    assert parse_docker_config(mine.to_json()) == mine
    merged = mine.merged(theirs)
    assert merged.for_registry("r.example") == Credentials(username="a", password="1")
    assert merged.for_registry("s.example") == Credentials(username="c")


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        json.dumps({"nope": {}}),
        json.dumps({"auths": {"r": {"auth": "%%%"}}}),
        json.dumps({"auths": {"r": {"auth": b64("nocolon")}}}),
    ],
)
def test_malformed_configs_are_refused(text: str) -> None:
    with pytest.raises(CredentialsError):
        parse_docker_config(text)


def test_the_password_is_not_in_the_repr() -> None:
    assert "hunter2" not in repr(Credentials(username="u", password="hunter2", identity_token="tok"))
