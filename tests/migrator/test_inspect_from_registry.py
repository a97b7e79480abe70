"""``kubectl migrate inspect CHECKPOINT --from-registry``: real checkpoint images (ocicrypt-encrypted to a node key),
pushed by the registry client to an in-process registry, read back, decrypted and described by the CLI.

The registry is ``tests/node_agent/agent_fakes.FakeRegistry`` (the distribution API the agent pushes to in its
own tests), served from a thread of its own so that the CLI runs as a user runs it (``main``, its own event loop).
The round trip uses a real ``criu dump`` (root and CRIU, as in CI: tests/ocicheckpoint/criudump.py); the errors
need only an archive.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from migrator import api
from node_agent.archives import inspect_archive
from ocicheckpoint import criuimages, encryption
from ocicheckpoint import image as oci
from ocicheckpoint.credentials import Credentials, DockerConfig
from ocicheckpoint.registry import RegistryClient
from tests.migrator.test_checkpoint_cli import CheckpointApi, checkpoint_obj
from tests.migrator.test_cli import run_cli
from tests.node_agent.agent_fakes import FakeRegistry, make_archive
from tests.ocicheckpoint import criudump

NAME = "web-20250301-115000"
REPOSITORY = "ckpt/shop/web"
USER = "puller"
INFO = oci.CheckpointInfo(
    container="main", pod="web", namespace="shop", rootfs_image_name="docker.io/library/nginx:1.27",
    rootfs_image_ref="docker.io/library/nginx@sha256:" + "1" * 64, runtime="runc", criu_version="4.1",
)  # fmt: skip


@contextmanager
def serving(app: web.Application) -> Iterator[str]:
    """``app`` on 127.0.0.1 (a loopback registry: plain HTTP) in a thread with its own event loop; its host:port."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{runner.addresses[0][1]}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@dataclass
class World:
    tmp_path: Path
    host: str
    fake: FakeRegistry
    key: Path  # the nodes' private key (PEM)
    public: encryption.PublicKey
    logins: Path  # a docker config JSON with credentials for the registry
    api: CheckpointApi

    def push(self, archive: Path, *, encrypted: bool = True, checkpoint: bool = True) -> tuple[str, oci.CheckpointImage]:
        """Push ``archive`` as a checkpoint image (encrypted to the node key), as the agent does; its reference by digest."""
        image = oci.checkpoint_image(archive=archive, info=INFO, recipients=[self.public] if encrypted else [])
        manifest = image.manifest_bytes
        if not checkpoint:  # the same image without the checkpoint annotations: an ordinary image
            manifest = oci.build_manifest(config=image.config, layers=[image.layer])

        async def push() -> str:
            async with aiohttp.ClientSession() as session:
                client = RegistryClient(host=self.host, session=session, plain_http=True)
                return await client.push_image(
                    repository=REPOSITORY, tag="ck-1", layers=list(image.files), config=image.config,
                    config_bytes=image.config_bytes, manifest=manifest,
                )  # fmt: skip

        return f"{self.host}/{REPOSITORY}@{asyncio.run(push())}", image

    def checkpoint(self, reference: str) -> None:
        obj = checkpoint_obj(NAME)
        obj["status"]["containers"][0]["image"] = reference
        self.api.put(api.PODCHECKPOINTS, obj)

    def inspect(self, *extra: str, key: bool = True, logins: bool = True) -> tuple[int, str, str]:
        argv = ["inspect", NAME, "--from-registry", *extra]
        argv += ["--decryption-key", str(self.key)] if key else []
        argv += ["--registry-config", str(self.logins)] if logins else []
        return run_cli(self.api, *argv)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))  # never the user's own logins
    private, public = encryption.new_keypair(bits=2048)
    key = tmp_path / "node.key"
    encryption.write_private_key(path=key, pem=private)
    fake = FakeRegistry()
    with serving(fake.app()) as host:
        logins = tmp_path / "config.json"
        logins.write_text(DockerConfig(auths={host: Credentials(username=USER, password="secret")}).to_json())
        yield World(
            tmp_path=tmp_path, host=host, fake=fake, key=key, public=encryption.parse_public_key(public), logins=logins,
            api=CheckpointApi(),
        )  # fmt: skip


@pytest.fixture(scope="module")
def dump() -> Iterator[criudump.Dump]:
    with criudump.dumped_tree() as made:
        yield made


def _one_error(result: tuple[int, str, str]) -> str:
    code, out, err = result
    assert (code, out) == (1, "") and err.startswith("error: ") and err.count("\n") == 1, result
    assert "Traceback" not in err
    return err


# --- the round trip ---------------------------------------------------------------------------
def test_the_image_decrypted_as_it_downloads_says_what_the_agent_said_of_the_same_archive(
    world: World, dump: criudump.Dump
) -> None:
    archive = criudump.archive_of(dump, world.tmp_path / "checkpoint.tar")
    agent_side = inspect_archive(archive).inspection  # what the node agent records in status.inspection
    assert agent_side is not None and {p.pid for p in agent_side.processes} == {dump.shell, dump.sleep, dump.python}
    reference, image = world.push(archive)
    assert image.encrypted and world.fake.blobs[image.layer.digest] != archive.read_bytes(), "the registry holds ciphertext"
    world.checkpoint(reference)

    code, out, err = world.inspect("-o", "json")
    assert (code, err) == (0, "")
    assert json.loads(out) == {"main": agent_side.to_json()}

    code, page, err = world.inspect()
    assert (code, err) == (0, "")
    lines = page.splitlines()
    header = lines.index("CRIU Images (read from the registry image, decrypted locally):")
    tree = criuimages.render_tree(agent_side)
    assert lines[header + 1 :] == ["  main:", *[f"    {line}".rstrip() for line in tree.splitlines()]]
    assert f"Image:      {reference}" in page and "python" in page
    # The page is today's but for where its CRIU section comes from.
    world.api.objects[(api.PODCHECKPOINTS.plural, "shop", NAME)]["status"]["inspection"] = {"main": agent_side.to_json()}
    recorded = run_cli(world.api, "inspect", NAME)[1].splitlines()
    assert recorded[: recorded.index("CRIU Images:")] == lines[:header]
    assert recorded[recorded.index("CRIU Images:") + 1 :] == lines[header + 1 :]


def test_an_unencrypted_image_needs_no_key_and_one_without_criu_images_is_not_a_checkpoint(world: World) -> None:
    reference, _ = world.push(make_archive(world.tmp_path / "plain.tar", container="main"), encrypted=False)
    world.checkpoint(reference)
    err = _one_error(world.inspect(key=False))
    assert f'container "main": {reference} is not a checkpoint image (its layer is not a checkpoint archive: ' in err
    assert "no pstree.img: not a CRIU checkpoint" in err


# --- what fails, in one line ------------------------------------------------------------------
def test_an_encrypted_image_without_a_key_says_to_give_the_nodes_key(world: World) -> None:
    reference, image = world.push(make_archive(world.tmp_path / "a.tar", container="main"))
    world.checkpoint(reference)
    err = _one_error(world.inspect(key=False))
    assert err == (
        'error: container "main": the image is encrypted: give --decryption-key with the nodes\' private key '
        "(docs/encryption.md)\n"
    )
    assert f"GET /v2/{REPOSITORY}/blobs/{image.layer.digest}" not in world.fake.requests, "no layer read without a key"


def test_a_key_the_image_was_not_encrypted_to_is_refused(world: World) -> None:
    reference, _ = world.push(make_archive(world.tmp_path / "a.tar", container="main"))
    world.checkpoint(reference)
    encryption.write_private_key(path=world.key, pem=encryption.new_keypair(bits=2048)[0])
    err = _one_error(world.inspect())
    assert f'container "main": the image is encrypted to other keys: --decryption-key {world.key} is not the private key' in err
    world.key.write_text("not a key")
    err = _one_error(world.inspect())
    assert f"--decryption-key {world.key}: not an unencrypted PEM private key" in err


def test_a_layer_or_manifest_altered_in_the_registry_is_a_digest_mismatch(world: World) -> None:
    reference, image = world.push(make_archive(world.tmp_path / "a.tar", container="main"))
    world.checkpoint(reference)
    sealed = bytearray(world.fake.blobs[image.layer.digest])
    sealed[-1] ^= 0x01  # the tar's last padding byte: the archive still reads, its digest and HMAC do not
    world.fake.blobs[image.layer.digest] = bytes(sealed)
    err = _one_error(world.inspect())
    assert f'container "main": the registry\'s copy of {reference} does not match its digests: encrypted layer hashed to' in err

    world.fake.blobs[image.layer.digest] = image.layer_path.read_bytes()
    assert world.inspect()[0] == 1, "a layer without CRIU images is no checkpoint, but it is intact"
    digest = reference.split("@")[1]
    world.fake.manifests[digest] = world.fake.manifests[digest].replace(b'"schemaVersion":2', b'"schemaVersion": 2')
    err = _one_error(world.inspect())
    assert f"the registry's copy of {reference} does not match its digest: manifest {digest} hashed to sha256:" in err


def test_a_refusing_registry_names_the_credentials_file(world: World) -> None:
    reference, _ = world.push(make_archive(world.tmp_path / "a.tar", container="main"))
    world.checkpoint(reference)
    host, repository = reference.split("/", 1)[0], REPOSITORY
    world.fake.fail = [401]
    err = _one_error(world.inspect())
    assert err == (
        f'error: the registry {host} refused the pull of {repository} as "{USER}" (HTTP 401; credentials from {world.logins})\n'
    )
    world.fake.fail = [403]
    err = _one_error(world.inspect(logins=False))
    no_config = world.tmp_path / "no-docker-config" / "config.json"
    assert f"refused the pull of {repository} anonymously (HTTP 403; no credentials: there is no {no_config}" in err
    world.logins.write_text(DockerConfig(auths={"other.example": Credentials(username="x", password="y")}).to_json())
    world.fake.fail = [401]
    assert f"(HTTP 401; {world.logins} has no entry for {host})" in _one_error(world.inspect())


def test_an_image_that_is_not_a_checkpoint_and_a_checkpoint_without_images(world: World) -> None:
    reference, _ = world.push(make_archive(world.tmp_path / "a.tar", container="main"), checkpoint=False)
    world.checkpoint(reference)
    err = _one_error(world.inspect())
    assert f"{reference} is not a checkpoint image (its manifest has no checkpoint annotation)" in err
    world.api.put(api.PODCHECKPOINTS, checkpoint_obj(NAME, phase="Checkpointing", containers=[]))
    assert f'podcheckpoint "{NAME}" has no image in the registry yet (it is Checkpointing)' in _one_error(world.inspect())


def test_the_registry_flags_need_from_registry(world: World) -> None:
    err = _one_error(run_cli(world.api, "inspect", NAME, "--decryption-key", str(world.key)))
    assert "--decryption-key is for reading the images themselves: it needs --from-registry" in err
    world.checkpoint(f"{world.host}/{REPOSITORY}@sha256:" + "0" * 64)
    err = _one_error(world.inspect("--registry-config", str(world.tmp_path / "absent.json"), logins=False))
    assert f"--registry-config {world.tmp_path / 'absent.json'}: no such file" in err
