"""``kubectl migrate inspect CHECKPOINT --from-registry``: what the checkpoint images themselves hold.

Why: ``status.inspection`` is what the node agent said about the archive while it uploaded it. A
forensic look (after an incident, before a checkpoint is restored where it matters) should not have
to take the agent's word for it, and should still work when the status has none: the images are
the checkpoint. So each container's image is read from the registry as a restoring node reads it,
and described by the agent's own reader (``criuimages.inspect_tar``): the manifest by its digest,
the config (for its ``diff_ids``), then the one layer, decrypted here while it downloads
(``RegistryClient.read_layer``). The layer is the container's memory: it is never whole in memory
and nothing of it is written to disk; only the small CRIU image files an inspection reads are kept,
within criuimages' caps. Its checks come at its end (the blob's digest, the HMAC, the plaintext's
digest against the wrapped options and the config's ``diff_id``), and an inspection read from bytes
that fail one is never printed.

Who can: whoever holds the nodes' private key (docs/encryption.md) and credentials that may pull
the checkpoint repository (SECURITY.md); the images stay encrypted at rest, the key and the
plaintext never leave this process. Credentials come from a docker config (``--registry-config``,
by default docker's own ``config.json``); a registry host it has no entry for is asked anonymously,
as docker does. A loopback registry is spoken to in plain HTTP (as docker does), another one only
with ``--plain-http``.

Decrypting needs ``cryptography`` (compiled code), which the krew build of kubectl-migrate cannot
carry (krew/build.py): it is imported only for a key, and its absence is one line saying how to get it.

Every failure is one line that says what to do: the image is encrypted and no key was given, the
key is not one the image was encrypted to, the registry refused the credentials (naming the file
they came from), a digest that does not match, an image that is not a checkpoint.
"""

from __future__ import annotations

import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final

import aiohttp

from migrator.cli.errors import CliError
from ocicheckpoint import criuimages, names
from ocicheckpoint import image as oci
from ocicheckpoint.credentials import Credentials, CredentialsError, DockerConfig, default_docker_config_path, load_docker_config
from ocicheckpoint.reference import Reference, is_loopback, parse_reference
from ocicheckpoint.registry import DigestMismatch, PlaintextReader, RegistryClient, RegistryError

if TYPE_CHECKING:
    from ocicheckpoint.encryption import PrivateKey

ENCRYPTED_NO_KEY: Final = "the image is encrypted: give --decryption-key with the nodes' private key (docs/encryption.md)"
READ_DECRYPTED: Final = "read from the registry image, decrypted locally"
READ_PLAIN: Final = "read from the registry image, which is not encrypted"
# aiohttp's default (5 minutes in all) would cut a large layer's download short: a stall is what ends one.
TIMEOUT: Final = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120)


@dataclass(frozen=True, kw_only=True)
class RegistryOptions:
    """``--decryption-key``, ``--registry-config`` and ``--plain-http`` as given (None: not given)."""

    decryption_key: Path | None = None
    registry_config: Path | None = None
    plain_http: bool = False


@dataclass(frozen=True, kw_only=True)
class ImageInspection:
    """One container's checkpoint image as read from the registry, and what its CRIU images hold."""

    container: str
    image: str
    encrypted: bool
    inspection: criuimages.Inspection


@dataclass(frozen=True, kw_only=True)
class Logins:
    """The docker config pulled with, and where it came from (``path`` None: there was none at ``looked_at``)."""

    config: DockerConfig = field(default_factory=DockerConfig)
    path: Path | None = None
    looked_at: Path | None = None

    def refused(self, *, ref: Reference, status: int | None, credentials: Credentials | None) -> CliError:
        """The registry said 401/403: who asked, and where the credentials came from (or why there were none)."""
        if credentials is None:
            who = "anonymously"
        else:
            who = f'as "{credentials.username}"' if credentials.username else "with an identity token"
        if self.path is None:
            where = f"no credentials: there is no {self.looked_at}; give --registry-config FILE, a docker config JSON"
        elif credentials is None:
            where = f"{self.path} has no entry for {ref.registry}"
        else:
            where = f"credentials from {self.path}"
        return CliError(f"the registry {ref.registry} refused the pull of {ref.repository} {who} (HTTP {status}; {where})")


def load_logins(path: Path | None) -> Logins:
    """``--registry-config`` (it must exist), else docker's own config.json if there is one, else none: anonymous."""
    given = path is not None
    path = path if path is not None else default_docker_config_path()
    if not path.is_file():
        if given:
            raise CliError(f"--registry-config {path}: no such file")
        return Logins(looked_at=path)
    try:
        return Logins(config=load_docker_config(path), path=path, looked_at=path)
    except (OSError, CredentialsError) as exc:
        raise CliError(f"registry credentials {path}: {exc}") from None


def _encryption() -> ModuleType:
    """``ocicheckpoint.encryption``, imported only when a key is at hand (it needs ``cryptography``)."""
    try:
        from ocicheckpoint import encryption
    except ImportError as exc:
        raise CliError(
            f"decrypting needs the Python package cryptography ({exc}): pip install cryptography "
            "(the krew build of kubectl-migrate is pure Python and cannot carry it)"
        ) from None
    return encryption


def load_key(path: Path) -> list[PrivateKey]:
    """``--decryption-key``: one PEM RSA private key, as the nodes hold it (docs/encryption.md)."""
    encryption = _encryption()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(f"--decryption-key {path}: {exc.strerror or exc}") from None
    try:
        return [encryption.parse_private_key(data, source=f"--decryption-key {path}")]
    except encryption.EncryptionError as exc:
        raise CliError(f"{exc} (the nodes' private key: docs/encryption.md)") from None


def _describe(stream: PlaintextReader) -> criuimages.Inspection | criuimages.CriuImageError | tarfile.TarError:
    """The layer's inspection, or why it is not a checkpoint: returned, not raised, so the rest of the blob is
    still read and checked (an altered layer is reported as altered, not as "not a checkpoint")."""
    try:
        return criuimages.inspect_tar(stream)
    except (criuimages.CriuImageError, tarfile.TarError) as exc:
        return exc


class _Reader:
    """Reads checkpoint images with one registry client per host (its tokens reused) and the key, if any."""

    def __init__(self, *, session: aiohttp.ClientSession, options: RegistryOptions, logins: Logins) -> None:
        self._session = session
        self._options = options
        self._logins = logins
        self._keys = load_key(options.decryption_key) if options.decryption_key is not None else None
        self._clients: dict[str, RegistryClient] = {}

    def _client(self, ref: Reference) -> RegistryClient:
        if ref.registry not in self._clients:
            self._clients[ref.registry] = RegistryClient(
                host=ref.registry,
                session=self._session,
                plain_http=self._options.plain_http or is_loopback(ref.registry),
                credentials=self._logins.config.for_registry(ref.registry),
            )
        return self._clients[ref.registry]

    async def read(self, *, container: str, image: str) -> ImageInspection:
        what = f'container "{container}"'
        try:
            ref = parse_reference(image)
        except ValueError as exc:
            raise CliError(f"{what}: {exc}") from None
        client = self._client(ref)
        try:
            return await self._read(client, ref=ref, container=container, image=image)
        except DigestMismatch as exc:
            raise CliError(f"{what}: the registry's copy of {image} does not match its digest: {exc}") from None
        except RegistryError as exc:
            if exc.status in (401, 403):
                raise self._logins.refused(
                    ref=ref, status=exc.status, credentials=self._logins.config.for_registry(ref.registry)
                ) from None
            raise CliError(f"{what}: reading {image} from the registry: {exc}") from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise CliError(f"{what}: cannot read {image} from the registry {ref.registry}: {type(exc).__name__}: {exc}") from None

    async def _read(self, client: RegistryClient, *, ref: Reference, container: str, image: str) -> ImageInspection:
        what = f'container "{container}"'
        not_checkpoint = f"{what}: {image} is not a checkpoint image"
        body, media_type, _ = await client.get_manifest(repository=ref.repository, reference=ref.ref)  # its digest checked
        if media_type in (names.MEDIA_TYPE_OCI_INDEX, names.MEDIA_TYPE_DOCKER_LIST):
            raise CliError(f"{not_checkpoint} (it is an image index)")
        try:
            manifest = oci.parse_manifest(body, media_type=media_type)
        except (ValueError, KeyError, TypeError) as exc:
            raise CliError(f"{not_checkpoint} (its manifest cannot be read: {exc})") from None
        if manifest.checkpoint_container is None:
            raise CliError(f"{not_checkpoint} (its manifest has no checkpoint annotation)")
        if len(manifest.layers) != 1:
            raise CliError(f"{not_checkpoint} (it has {len(manifest.layers)} layers, a checkpoint image one)")
        try:
            config = oci.parse_config(await client.get_blob_bytes(repository=ref.repository, digest=manifest.config.digest))
        except (ValueError, AttributeError) as exc:
            raise CliError(f"{not_checkpoint} (its config cannot be read: {exc})") from None
        (layer,) = manifest.layers
        # encryption.is_encrypted, without importing it: that needs cryptography, and only a key does.
        encrypted = layer.media_type.endswith(names.ENCRYPTED_MEDIA_TYPE_SUFFIX)
        opening = None
        if encrypted:
            if self._keys is None:
                raise CliError(f"{what}: {ENCRYPTED_NO_KEY}")
            encryption = _encryption()
            try:
                opening = encryption.LayerOpening(descriptor=layer, private_keys=self._keys)
            except encryption.NoMatchingKeyError:
                raise CliError(
                    f"{what}: the image is encrypted to other keys: --decryption-key {self._options.decryption_key} "
                    "is not the private key of any node it was encrypted for (docs/encryption.md)"
                ) from None
            except encryption.EncryptionError as exc:
                raise CliError(f"{what}: {image} cannot be decrypted: {exc}") from None
            try:
                found, plain = await client.read_layer(repository=ref.repository, layer=layer, read=_describe, opening=opening)
            except encryption.DecryptionError as exc:  # the blob's digest, the HMAC or the plaintext's digest
                raise CliError(f"{what}: the registry's copy of {image} does not match its digests: {exc}") from None
        else:
            found, plain = await client.read_layer(repository=ref.repository, layer=layer, read=_describe)
        if config.diff_ids != (plain,):
            raise CliError(
                f"{what}: the registry's copy of {image} does not match its digests: its layer "
                f"{'decrypted' if encrypted else 'hashed'} to {plain}, its config says {', '.join(config.diff_ids) or 'nothing'}"
            )
        if not isinstance(found, criuimages.Inspection):
            raise CliError(f"{not_checkpoint} (its layer is not a checkpoint archive: {found})")
        return ImageInspection(container=container, image=image, encrypted=encrypted, inspection=found)


async def read_images(*, containers: Sequence[Mapping[str, Any]], options: RegistryOptions) -> list[ImageInspection]:
    """Each container's checkpoint image (``status.containers[]``: ``name``, ``image``), one after the other."""
    logins = load_logins(options.registry_config)
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        reader = _Reader(session=session, options=options, logins=logins)
        return [await reader.read(container=str(c.get("name") or "?"), image=str(c.get("image") or "")) for c in containers]


def source_of(read: Sequence[ImageInspection]) -> str:
    """What the page says about where its inspections come from."""
    return READ_DECRYPTED if any(r.encrypted for r in read) else READ_PLAIN
