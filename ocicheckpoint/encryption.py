"""Encryption at rest of image layers, in ocicrypt's format (what CRI-O, containerd and skopeo read).

Why: a checkpoint image holds a process's whole memory (keys, tokens, user data) and sits in
a registry, which any puller of the repository can read. Encrypting each layer to the
*nodes'* public keys means only a node holding a private key can restore it, and the
registry sees ciphertext only. Why ocicrypt's format and not our own: the runtimes decrypt
it themselves on pull (CRI-O's ``decryption_keys_path``, containerd's imgcrypt ``ctd-decoder``
stream processor), so a checkpoint image stays an ordinary image to them.

The format, as read from github.com/containers/ocicrypt v1.2.1 (the version imgcrypt v2.0.2
uses; see docs/facts.md, "Encrypted checkpoint images"):

* ``blockcipher/blockcipher_aes_ctr.go``: the layer is AES-256-CTR encrypted with a fresh
  32-byte key and a 16-byte random initial counter block (``nonce``); an HMAC-SHA256 keyed
  with the *same* key is taken over the ciphertext ("encrypt-then-MAC").
* ``blockcipher/blockcipher.go``: ``PrivateLayerBlockCipherOptions`` (``symkey``, ``digest``
  = the plaintext layer's digest, ``cipheroptions`` = ``{"nonce": ...}``) is what gets
  wrapped to the recipients; ``PublicLayerBlockCipherOptions`` (``cipher``, ``hmac``,
  ``cipheroptions`` = ``{}``) goes into the clear. Both are Go ``json.Marshal`` output, so
  byte strings are standard base64.
* ``encryption.go``: the wrapped keys go into the annotation
  ``org.opencontainers.image.enc.keys.jwe`` (comma-separated base64 values, one per
  wrapping), the public options base64-encoded into ``org.opencontainers.image.enc.pubopts``,
  and the media type gets ``+encrypted``. The descriptor's digest and size are the
  ciphertext's; the image config's ``rootfs.diff_ids`` stays the plaintext's (containerd's
  unpacker checks it after the stream processor decrypted).
* ``keywrap/jwe/keywrapper_jwe.go``: the private options are the plaintext of a JWE in JSON
  serialization (go-jose ``FullSerialize``): ``RSA-OAEP`` (SHA-1 OAEP) for RSA keys,
  content encryption ``A256GCM``; with one recipient go-jose writes the flattened form
  (``alg`` in the protected header), with several the general form (``alg`` per recipient).

Layers stream through in ``image.CHUNK`` pieces: never a whole layer in memory. Only RSA
keys are supported (ocicrypt also wraps to EC keys with ECDH-ES+A256KW; PEM EC keys are
refused here with a clear error rather than half-supported).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ocicheckpoint import names
from ocicheckpoint.image import CHUNK, Descriptor
from ocicheckpoint.pipe import Lanes

SYMMETRIC_KEY_BYTES = 32  # AES-256 (blockcipher_aes_ctr.go: keylen = 256 / 8)
NONCE_BYTES = 16  # aes.BlockSize: the whole initial counter block
GCM_IV_BYTES = 12  # go-jose's A256GCM nonce
RSA_KEY_BITS = 3072
PRIVATE_KEY_MODE = 0o600

PublicKey = rsa.RSAPublicKey
PrivateKey = rsa.RSAPrivateKey


class EncryptionError(ValueError):
    """A layer could not be encrypted or decrypted, or a key could not be used."""


class DecryptionError(EncryptionError):
    """An encrypted layer failed to decrypt: tampered, truncated, or not ocicrypt's format."""


class NoMatchingKeyError(DecryptionError):
    """None of the private keys at hand can unwrap the layer's key: this node is not a recipient."""


@dataclass(frozen=True, kw_only=True)
class DecryptedLayer:
    """What decrypting gave: the plaintext's media type, digest (verified) and size."""

    media_type: str
    digest: str
    size: int


# --- media types -----------------------------------------------------------------------------


def is_encrypted(media_type: str) -> bool:
    return media_type.endswith(names.ENCRYPTED_MEDIA_TYPE_SUFFIX)


def encrypted_media_type(media_type: str) -> str:
    """The media type of ``media_type`` once encrypted (``...tar`` -> ``...tar+encrypted``)."""
    if is_encrypted(media_type):
        raise EncryptionError(f"{media_type} is already encrypted")
    return media_type + names.ENCRYPTED_MEDIA_TYPE_SUFFIX


def plaintext_media_type(media_type: str) -> str:
    if not is_encrypted(media_type):
        raise EncryptionError(f"{media_type} is not an encrypted media type")
    return media_type.removesuffix(names.ENCRYPTED_MEDIA_TYPE_SUFFIX)


# --- base64 as Go and JOSE spell it ----------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _go_json(doc: Mapping[str, Any]) -> bytes:
    """JSON as Go's encoding/json writes it for these structs: compact, fields in order given."""
    return json.dumps(doc, separators=(",", ":")).encode()


# --- JWE (RFC 7516 JSON serialization, as go-jose writes and reads it) -------------------------


def _oaep(alg: str) -> padding.OAEP:
    if alg == names.JWE_ALG_RSA_OAEP:
        return padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    if alg == names.JWE_ALG_RSA_OAEP_256:
        return padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    supported = f"{names.JWE_ALG_RSA_OAEP}, {names.JWE_ALG_RSA_OAEP_256}"
    raise DecryptionError(f"JWE key algorithm {alg!r} is not supported (only {supported})")


_GCM_KEY_BYTES: Mapping[str, int] = {names.JWE_ENC_A128GCM: 16, names.JWE_ENC_A192GCM: 24, names.JWE_ENC_A256GCM: 32}


def jwe_wrap(*, plaintext: bytes, recipients: Sequence[PublicKey]) -> bytes:
    """A JWE of ``plaintext`` to every recipient, serialized as go-jose's ``FullSerialize``."""
    if not recipients:
        raise EncryptionError("no recipients to wrap the layer key to")
    for key in recipients:
        if not isinstance(key, rsa.RSAPublicKey):
            raise EncryptionError(f"unsupported recipient key type {type(key).__name__}: only RSA public keys")
    cek = secrets.token_bytes(_GCM_KEY_BYTES[names.JWE_ENC_A256GCM])
    wrapped = [key.encrypt(cek, _oaep(names.JWE_ALG_RSA_OAEP)) for key in recipients]
    single = len(recipients) == 1
    # go-jose moves a single recipient's header into the protected header; keys sorted (a Go map).
    header: dict[str, str] = {names.JWE_HEADER_ENC: names.JWE_ENC_A256GCM}
    if single:
        header[names.JWE_HEADER_ALG] = names.JWE_ALG_RSA_OAEP
    protected = _b64url(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
    iv = secrets.token_bytes(GCM_IV_BYTES)
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected.encode("ascii"))
    ciphertext, tag = sealed[:-16], sealed[-16:]
    doc: dict[str, Any] = {names.JWE_PROTECTED: protected}
    if single:
        doc[names.JWE_ENCRYPTED_KEY] = _b64url(wrapped[0])
    else:
        doc[names.JWE_RECIPIENTS] = [
            {names.JWE_HEADER: {names.JWE_HEADER_ALG: names.JWE_ALG_RSA_OAEP}, names.JWE_ENCRYPTED_KEY: _b64url(key)}
            for key in wrapped
        ]
    doc[names.JWE_IV] = _b64url(iv)
    doc[names.JWE_CIPHERTEXT] = _b64url(ciphertext)
    doc[names.JWE_TAG] = _b64url(tag)
    return _go_json(doc)


def jwe_unwrap(*, jwe: bytes, private_keys: Sequence[PrivateKey]) -> bytes:
    """The plaintext of a JWE (JSON serialization, flattened or general) for any of the keys.

    Raises ``NoMatchingKeyError`` when no key unwraps any recipient's key.
    """
    try:
        doc = json.loads(jwe)
        protected_b64 = str(doc.get(names.JWE_PROTECTED, ""))
        protected = json.loads(_unb64url(protected_b64)) if protected_b64 else {}
        shared = {**(doc.get(names.JWE_UNPROTECTED) or {}), **protected}
        if names.JWE_RECIPIENTS in doc:
            entries = [
                ({**shared, **(r.get(names.JWE_HEADER) or {})}, _unb64url(r[names.JWE_ENCRYPTED_KEY]))
                for r in doc[names.JWE_RECIPIENTS]
            ]
        else:
            entries = [({**shared, **(doc.get(names.JWE_HEADER) or {})}, _unb64url(doc[names.JWE_ENCRYPTED_KEY]))]
        iv = _unb64url(doc[names.JWE_IV])
        ciphertext = _unb64url(doc[names.JWE_CIPHERTEXT])
        tag = _unb64url(doc[names.JWE_TAG])
        aad = protected_b64.encode("ascii")
        if doc.get(names.JWE_AAD):
            aad += b"." + str(doc[names.JWE_AAD]).encode("ascii")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DecryptionError(f"not a JWE in JSON serialization: {exc}") from exc
    for headers, encrypted_key in entries:
        if headers.get(names.JWE_HEADER_ZIP):
            raise DecryptionError("compressed JWE payloads are not supported")
        enc = headers.get(names.JWE_HEADER_ENC)
        if enc not in _GCM_KEY_BYTES:
            raise DecryptionError(f"JWE content encryption {enc!r} is not supported (only AES-GCM)")
        oaep = _oaep(str(headers.get(names.JWE_HEADER_ALG)))
        for key in private_keys:
            try:
                cek = key.decrypt(encrypted_key, oaep)
            except ValueError:
                continue  # not this recipient's key
            if len(cek) != _GCM_KEY_BYTES[enc]:
                continue
            try:
                return AESGCM(cek).decrypt(iv, ciphertext + tag, aad)
            except InvalidTag as exc:
                raise DecryptionError("JWE authentication failed: the wrapped layer key was tampered with") from exc
    raise NoMatchingKeyError("none of the private keys is a recipient of this layer's key")


# --- layers ----------------------------------------------------------------------------------


class LayerPass:
    """A layer's bytes, fed once in order, turned into the blob that is uploaded.

    Every chunk of plaintext goes through ``feed`` once: it is hashed (the ``diff_id``), and,
    with recipients, AES-256-CTR encrypted and MAC'd (ocicrypt's "encrypt-then-MAC"); the
    blob is hashed as it leaves (the descriptor's digest). ``finish`` then gives the blob's
    descriptor (with ocicrypt's annotations) and the plaintext digest. Without recipients the
    blob is the plaintext and both digests are the same.

    Why one object fed chunk by chunk: the agent reads a checkpoint archive once and uploads it
    as it reads (``node_agent.publishing``), so hashing and encryption cannot be passes of their
    own over a file; ``encrypt_layer`` (file to file) is the same pass with a file as the sink.

    Encrypting, the four passes over each byte (plaintext hash, cipher, MAC, blob hash) are split
    over three threads: the plaintext's hash and the MAC each run in a lane of their own
    (``pipe.Lanes``) beside the feeder, which encrypts and hashes the blob. One thread does them at
    ~630 MB/s on the bench machine, three at ~900 MB/s on its 2 cores, more with more cores
    (bench/README.md). ``parallel=False`` keeps them on the feeder's thread. Not thread-safe: one
    feeder. ``finish`` or ``close`` (or the ``with`` block) ends the lanes' threads.
    """

    def __init__(
        self,
        *,
        media_type: str,
        recipients: Sequence[PublicKey] = (),
        annotations: Mapping[str, str] | None = None,
        parallel: bool = True,
    ) -> None:
        self._media_type = media_type
        self._recipients = tuple(recipients)
        self._annotations = dict(annotations or {})
        self._plain_hash = hashlib.sha256()
        self.size = 0
        self._lanes: Lanes | None = None
        if self._recipients:
            self._key = secrets.token_bytes(SYMMETRIC_KEY_BYTES)
            self._nonce = secrets.token_bytes(NONCE_BYTES)
            self._encryptor = Cipher(algorithms.AES(self._key), modes.CTR(self._nonce)).encryptor()
            self._mac = hmac.new(self._key, digestmod=hashlib.sha256)
            self._blob_hash = hashlib.sha256()
            self._lanes = Lanes(2) if parallel else None

    @property
    def encrypted(self) -> bool:
        return bool(self._recipients)

    def feed(self, chunk: bytes) -> bytes:
        """Plaintext in, the blob's next bytes out (the same bytes when not encrypting)."""
        self.size += len(chunk)
        if not self._recipients:
            self._plain_hash.update(chunk)
            return chunk
        if self._lanes is None:
            self._plain_hash.update(chunk)
            out = self._encryptor.update(chunk)
            self._mac.update(out)
        else:
            self._lanes.submit(0, self._plain_hash.update, chunk)
            out = self._encryptor.update(chunk)
            self._lanes.submit(1, self._mac.update, out)
        self._blob_hash.update(out)
        return out

    def close(self) -> None:
        """End the lanes' threads (``finish`` does); a pass given up on needs only this."""
        if self._lanes is not None:
            self._lanes.close()

    def __enter__(self) -> LayerPass:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def finish(self, *, plain_digest: str | None = None) -> tuple[Descriptor, str]:
        """(the blob's descriptor, the plaintext's digest). ``plain_digest``, when the caller
        already had it, is checked against what was fed, so a layer that changed is refused."""
        if self._lanes is not None:
            self._lanes.wait()
            self._lanes.close()
        digest = "sha256:" + self._plain_hash.hexdigest()
        if plain_digest is not None and plain_digest != digest:
            raise EncryptionError(f"layer hashed to {digest} while encrypting, expected {plain_digest}")
        if not self._recipients:
            plain = Descriptor(media_type=self._media_type, digest=digest, size=self.size, annotations=self._annotations)
            return plain, digest
        tail = self._encryptor.finalize()  # CTR: always empty
        if tail:
            raise EncryptionError("AES-CTR left bytes at the end of the stream")
        private_opts = _go_json(
            {
                names.OPTS_SYMKEY: _b64(self._key),
                names.OPTS_DIGEST: digest,
                names.OPTS_CIPHER_OPTIONS: {names.CIPHER_OPTION_NONCE: _b64(self._nonce)},
            }
        )
        public_opts = _go_json(
            {
                names.OPTS_CIPHER: names.CIPHER_AES_256_CTR_HMAC_SHA256,
                names.OPTS_HMAC: _b64(self._mac.digest()),
                names.OPTS_CIPHER_OPTIONS: {},
            }
        )
        wrapped = jwe_wrap(plaintext=private_opts, recipients=self._recipients)
        blob = Descriptor(
            media_type=encrypted_media_type(self._media_type),
            digest="sha256:" + self._blob_hash.hexdigest(),
            size=self.size,  # CTR: the ciphertext is as long as the plaintext
            annotations={
                **self._annotations,
                names.ANNOTATION_ENC_KEYS_JWE: _b64(wrapped),
                names.ANNOTATION_ENC_PUBOPTS: _b64(public_opts),
            },
        )
        return blob, digest


def encrypt_layer(
    *,
    src: Path,
    dst: Path,
    media_type: str,
    recipients: Sequence[PublicKey],
    plain_digest: str | None = None,
    annotations: Mapping[str, str] | None = None,
) -> Descriptor:
    """Encrypt the layer file ``src`` into ``dst``; the descriptor of ``dst`` for a manifest.

    Streams (one ``CHUNK`` in memory at a time). ``plain_digest``, when the caller already has
    it, is checked against what was read, so a layer that changed underneath is refused.
    ``annotations`` (e.g. a volume's name) are kept next to the encryption annotations.
    """
    if not recipients:
        raise EncryptionError("encrypting a layer needs at least one recipient")
    try:
        with LayerPass(media_type=media_type, recipients=recipients, annotations=annotations) as layer:
            with src.open("rb") as fin, dst.open("wb") as fout:
                while chunk := fin.read(CHUNK):
                    fout.write(layer.feed(chunk))
            blob, _ = layer.finish(plain_digest=plain_digest)
    except BaseException:
        dst.unlink(missing_ok=True)
        raise
    return blob


def _options(descriptor: Descriptor, private_keys: Sequence[PrivateKey]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(private, public) block-cipher options of an encrypted layer, unwrapped with a key at hand."""
    wrapped = descriptor.annotations.get(names.ANNOTATION_ENC_KEYS_JWE, "")
    if not wrapped:
        raise DecryptionError(
            f"layer {descriptor.digest} ({descriptor.media_type}) has no {names.ANNOTATION_ENC_KEYS_JWE} annotation: "
            "its key is wrapped by a scheme other than JWE (pgp, pkcs7, pkcs11, keyprovider), which is not supported"
        )
    if not private_keys:
        raise NoMatchingKeyError(f"layer {descriptor.digest} is encrypted and no private key is configured to decrypt it")
    private: dict[str, Any] | None = None
    for part in wrapped.split(","):
        try:
            jwe = _unb64(part)
        except ValueError as exc:
            raise DecryptionError(f"layer {descriptor.digest}: {names.ANNOTATION_ENC_KEYS_JWE} is not base64") from exc
        try:
            private = json.loads(jwe_unwrap(jwe=jwe, private_keys=private_keys))
            break
        except NoMatchingKeyError:
            continue
    if private is None:
        raise NoMatchingKeyError(
            f"layer {descriptor.digest} is encrypted to other keys: none of the {len(private_keys)} private key(s) "
            "at hand can unwrap it"
        )
    pub_b64 = descriptor.annotations.get(names.ANNOTATION_ENC_PUBOPTS, "")
    try:
        public = json.loads(_unb64(pub_b64)) if pub_b64 else {}
    except ValueError as exc:
        raise DecryptionError(f"layer {descriptor.digest}: {names.ANNOTATION_ENC_PUBOPTS} is not base64 JSON") from exc
    return private, public


class LayerOpening:
    """An encrypted layer's blob, fed once in order, turned back into its plaintext (``LayerPass`` reversed).

    ``feed`` decrypts each chunk while hashing the ciphertext and MAC'ing it and hashing the
    plaintext; ``finish`` checks, once the whole blob went through, the ciphertext's digest
    against the descriptor, the HMAC against the public options and the plaintext's digest
    against the wrapped private options. Until ``finish`` returned, what ``feed`` gave out is
    unverified: write it only where it is thrown away on failure (a pull's temporary directory),
    as CRI-O's and containerd's decrypting readers do. ``NoMatchingKeyError`` (at construction)
    when none of ``private_keys`` is a recipient.
    """

    def __init__(self, *, descriptor: Descriptor, private_keys: Sequence[PrivateKey]) -> None:
        self._descriptor = descriptor
        self._plain_type = plaintext_media_type(descriptor.media_type)
        private, public = _options(descriptor, private_keys)
        cipher = public.get(names.OPTS_CIPHER)
        if cipher != names.CIPHER_AES_256_CTR_HMAC_SHA256:
            raise DecryptionError(f"layer {descriptor.digest}: unsupported cipher {cipher!r}")
        try:
            key = _unb64(private[names.OPTS_SYMKEY])
            options = {**(public.get(names.OPTS_CIPHER_OPTIONS) or {}), **(private.get(names.OPTS_CIPHER_OPTIONS) or {})}
            nonce = _unb64(options[names.CIPHER_OPTION_NONCE])
            self._expected_hmac = _unb64(public.get(names.OPTS_HMAC) or "")
            self._expected_digest = str(private.get(names.OPTS_DIGEST) or "")
        except (KeyError, ValueError, TypeError) as exc:
            raise DecryptionError(f"layer {descriptor.digest}: malformed encryption options: {exc}") from exc
        if len(key) != SYMMETRIC_KEY_BYTES or len(nonce) != NONCE_BYTES:
            raise DecryptionError(f"layer {descriptor.digest}: key of {len(key)} bytes / nonce of {len(nonce)} bytes")
        if not self._expected_hmac:
            raise DecryptionError(f"layer {descriptor.digest}: no HMAC in {names.ANNOTATION_ENC_PUBOPTS}")
        if not self._expected_digest.startswith("sha256:"):
            raise DecryptionError(f"layer {descriptor.digest}: no sha256 plaintext digest in the wrapped options")
        self._decryptor = Cipher(algorithms.AES(key), modes.CTR(nonce)).decryptor()
        self._mac = hmac.new(key, digestmod=hashlib.sha256)
        self._plain_hash = hashlib.sha256()
        self._blob_hash = hashlib.sha256()
        self.size = 0

    @property
    def plain_digest(self) -> str:
        """What the plaintext must hash to (from the wrapped options; verified by ``finish``)."""
        return self._expected_digest

    def feed(self, chunk: bytes) -> bytes:
        self.check(chunk)
        return self.decrypt(chunk)

    # ``feed`` in two halves that need no lock between them, so that two threads can share the work
    # of one blob (each half sees every chunk, in order): the ciphertext's checks, and the decryption.
    def check(self, chunk: bytes) -> None:
        """The ciphertext's digest and HMAC, over the next chunk."""
        self._blob_hash.update(chunk)
        self._mac.update(chunk)

    def decrypt(self, chunk: bytes) -> bytes:
        """The next chunk's plaintext (hashed on the way)."""
        out = self._decryptor.update(chunk)
        self._plain_hash.update(out)
        self.size += len(out)
        return out

    def finish(self) -> DecryptedLayer:
        if self._decryptor.finalize():
            raise DecryptionError(f"layer {self._descriptor.digest}: AES-CTR left bytes at the end of the stream")
        got_blob = "sha256:" + self._blob_hash.hexdigest()
        if got_blob != self._descriptor.digest:
            raise DecryptionError(f"encrypted layer hashed to {got_blob}, its descriptor says {self._descriptor.digest}")
        if not hmac.compare_digest(self._mac.digest(), self._expected_hmac):
            raise DecryptionError(f"layer {self._descriptor.digest}: HMAC mismatch: the ciphertext was altered")
        got = "sha256:" + self._plain_hash.hexdigest()
        if got != self._expected_digest:
            raise DecryptionError(
                f"layer {self._descriptor.digest} decrypted to {got}, the wrapped options say {self._expected_digest}"
            )
        return DecryptedLayer(media_type=self._plain_type, digest=self._expected_digest, size=self.size)


def decrypt_layer(*, descriptor: Descriptor, src: Path, dst: Path, private_keys: Sequence[PrivateKey]) -> DecryptedLayer:
    """Decrypt the encrypted layer ``src`` (described by ``descriptor``) into ``dst``.

    Verifies, while streaming, the ciphertext's digest against the descriptor, the HMAC
    against the public options and the plaintext's digest against the wrapped private
    options; ``dst`` exists only if all three held. ``NoMatchingKeyError`` when none of
    ``private_keys`` is a recipient.
    """
    opening = LayerOpening(descriptor=descriptor, private_keys=private_keys)
    tmp = dst.with_name(dst.name + ".decrypting")
    try:
        with src.open("rb") as fin, tmp.open("wb") as fout:
            while chunk := fin.read(CHUNK):
                fout.write(opening.feed(chunk))
        out = opening.finish()
        tmp.replace(dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def strip_encryption_annotations(annotations: Mapping[str, str]) -> dict[str, str]:
    """Annotations without ocicrypt's (as ``ocicrypt.FilterOutAnnotations``)."""
    return {k: v for k, v in annotations.items() if not k.startswith(names.ANNOTATION_ENC_PREFIX)}


# --- keys --------------------------------------------------------------------------------------


def _key_files(paths: Iterable[Path]) -> list[Path]:
    """Regular files named by ``paths`` or under them (directories walked, Kubernetes' ``..data``
    symlink farm of ConfigMap/Secret volumes skipped so each key is read once)."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            for root, dirs, files in os.walk(path, followlinks=False):
                dirs[:] = sorted(d for d in dirs if not d.startswith(".."))
                out.extend(Path(root) / f for f in sorted(files) if not f.startswith("..") and (Path(root) / f).is_file())
        elif path.is_file():
            out.append(path)
        else:
            raise EncryptionError(f"key path {path} does not exist")
    return out


def parse_public_key(data: bytes, *, source: str = "key") -> PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise EncryptionError(f"{source}: not a PEM public key: {exc}") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise EncryptionError(f"{source}: a {type(key).__name__}; only RSA public keys are supported")
    return key


def parse_private_key(data: bytes, *, source: str = "key") -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise EncryptionError(f"{source}: not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise EncryptionError(f"{source}: a {type(key).__name__}; only RSA private keys are supported")
    return key


def load_public_keys(paths: Iterable[Path]) -> list[PublicKey]:
    """Every PEM public key in these files / directories (a file that is not one is an error:
    a recipient silently dropped would make an image its node cannot restore)."""
    return [parse_public_key(path.read_bytes(), source=str(path)) for path in _key_files(paths)]


def load_private_keys(directory: Path) -> list[PrivateKey]:
    """Every PEM private key under ``directory`` (as ctd-decoder's ``--decryption-keys-path``
    and CRI-O's ``decryption_keys_path`` walk it). Files that are not private keys are skipped
    like ocicrypt skips them; a missing directory is no keys."""
    if not directory.exists():
        return []
    keys: list[PrivateKey] = []
    for path in _key_files([directory]):
        try:
            keys.append(parse_private_key(path.read_bytes(), source=str(path)))
        except EncryptionError:
            continue
    return keys


def new_keypair(*, bits: int = RSA_KEY_BITS) -> tuple[bytes, bytes]:
    """(private PEM (PKCS#8, unencrypted), public PEM (SubjectPublicKeyInfo)) of a new RSA key:
    the forms ocicrypt's ``utils.ParsePrivateKey`` / ``ParsePublicKey`` read."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        encoding=serialization.Encoding.PEM, format=serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def write_private_key(*, path: Path, pem: bytes) -> None:
    """Write a private key readable by its owner only (created 0600, never wider for a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_KEY_MODE)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    os.chmod(tmp, PRIVATE_KEY_MODE)
    tmp.replace(path)
