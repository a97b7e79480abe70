"""Layer encryption in ocicrypt's format: round trips, tamper and key failures, and a cross-check
against the real Go library (ocicrypt-check), both directions, so a format divergence fails here
and not on a node during a migration."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from pathlib import Path

import pytest

from ocicheckpoint import encryption, names
from ocicheckpoint.image import Descriptor, parse_manifest, sha256_file
from ocicheckpoint.volumedata import VolumeLayer, volume_data_image, volume_layers
from tests.ocicheckpoint import ocicrypt_check

BITS = 2048  # tests only: fast to generate


@pytest.fixture(scope="module")
def keypair() -> tuple[bytes, bytes]:
    return encryption.new_keypair(bits=BITS)


@pytest.fixture(scope="module")
def other_keypair() -> tuple[bytes, bytes]:
    return encryption.new_keypair(bits=BITS)


@pytest.fixture(scope="module")
def tool() -> Path:
    return ocicrypt_check.build()


def _layer(tmp_path: Path, size: int = (3 << 20) + 12345) -> Path:
    path = tmp_path / "layer.tar"
    path.write_bytes(os.urandom(size))
    return path


def _keyfiles(tmp_path: Path, pair: tuple[bytes, bytes], stem: str) -> tuple[Path, Path]:
    priv, pub = tmp_path / f"{stem}.key", tmp_path / f"{stem}.pub.pem"
    encryption.write_private_key(path=priv, pem=pair[0])
    pub.write_bytes(pair[1])
    return priv, pub


def test_round_trip_streams_and_keeps_plaintext_digest(tmp_path: Path, keypair: tuple[bytes, bytes]) -> None:
    src = _layer(tmp_path)
    plain_digest, plain_size = sha256_file(src)
    pub = encryption.parse_public_key(keypair[1])
    desc = encryption.encrypt_layer(
        src=src, dst=tmp_path / "enc", media_type=names.MEDIA_TYPE_OCI_LAYER_TAR, recipients=[pub], plain_digest=plain_digest
    )
    assert desc.media_type == names.MEDIA_TYPE_OCI_LAYER_TAR_ENCRYPTED
    assert (desc.digest, desc.size) == sha256_file(tmp_path / "enc")
    assert desc.size == plain_size  # CTR: no padding
    assert desc.digest != plain_digest
    assert set(desc.annotations) == {names.ANNOTATION_ENC_KEYS_JWE, names.ANNOTATION_ENC_PUBOPTS}
    pubopts = json.loads(base64.b64decode(desc.annotations[names.ANNOTATION_ENC_PUBOPTS]))
    assert pubopts[names.OPTS_CIPHER] == names.CIPHER_AES_256_CTR_HMAC_SHA256
    assert len(base64.b64decode(pubopts[names.OPTS_HMAC])) == 32
    jwe = json.loads(base64.b64decode(desc.annotations[names.ANNOTATION_ENC_KEYS_JWE]))
    protected = json.loads(base64.urlsafe_b64decode(jwe[names.JWE_PROTECTED] + "=="))
    assert protected == {names.JWE_HEADER_ALG: names.JWE_ALG_RSA_OAEP, names.JWE_HEADER_ENC: names.JWE_ENC_A256GCM}
    priv = encryption.parse_private_key(keypair[0])
    out = encryption.decrypt_layer(descriptor=desc, src=tmp_path / "enc", dst=tmp_path / "plain", private_keys=[priv])
    assert out == encryption.DecryptedLayer(media_type=names.MEDIA_TYPE_OCI_LAYER_TAR, digest=plain_digest, size=plain_size)
    assert (tmp_path / "plain").read_bytes() == src.read_bytes()


def test_extra_annotations_are_kept_and_wrong_plain_digest_refused(tmp_path: Path, keypair: tuple[bytes, bytes]) -> None:
    src = _layer(tmp_path, 100)
    pub = encryption.parse_public_key(keypair[1])
    desc = encryption.encrypt_layer(
        src=src, dst=tmp_path / "enc", media_type=names.MEDIA_TYPE_VOLUME_DATA_LAYER, recipients=[pub], annotations={"a": "b"}
    )
    assert desc.annotations["a"] == "b"
    assert encryption.strip_encryption_annotations(desc.annotations) == {"a": "b"}
    with pytest.raises(encryption.EncryptionError, match="hashed to"):
        encryption.encrypt_layer(
            src=src, dst=tmp_path / "enc2", media_type=names.MEDIA_TYPE_OCI_LAYER_TAR, recipients=[pub], plain_digest="sha256:00"
        )
    assert not (tmp_path / "enc2").exists()


def test_without_the_key_decryption_fails_clearly(
    tmp_path: Path, keypair: tuple[bytes, bytes], other_keypair: tuple[bytes, bytes]
) -> None:
    src = _layer(tmp_path, 1000)
    desc = encryption.encrypt_layer(
        src=src,
        dst=tmp_path / "enc",
        media_type=names.MEDIA_TYPE_OCI_LAYER_TAR,
        recipients=[encryption.parse_public_key(keypair[1])],
    )
    wrong = encryption.parse_private_key(other_keypair[0])
    with pytest.raises(encryption.NoMatchingKeyError, match="other keys"):
        encryption.decrypt_layer(descriptor=desc, src=tmp_path / "enc", dst=tmp_path / "plain", private_keys=[wrong])
    with pytest.raises(encryption.NoMatchingKeyError, match="no private key"):
        encryption.decrypt_layer(descriptor=desc, src=tmp_path / "enc", dst=tmp_path / "plain", private_keys=[])
    assert not (tmp_path / "plain").exists()


def test_tampering_is_detected(tmp_path: Path, keypair: tuple[bytes, bytes]) -> None:
    src = _layer(tmp_path, 5000)
    enc = tmp_path / "enc"
    desc = encryption.encrypt_layer(
        src=src, dst=enc, media_type=names.MEDIA_TYPE_OCI_LAYER_TAR, recipients=[encryption.parse_public_key(keypair[1])]
    )
    priv = encryption.parse_private_key(keypair[0])
    data = bytearray(enc.read_bytes())
    data[100] ^= 1
    enc.write_bytes(bytes(data))
    # The registry-facing digest no longer holds...
    with pytest.raises(encryption.DecryptionError, match="descriptor says"):
        encryption.decrypt_layer(descriptor=desc, src=enc, dst=tmp_path / "plain", private_keys=[priv])
    # ...and with a descriptor forged to match, the HMAC catches it.
    forged = Descriptor(media_type=desc.media_type, digest=sha256_file(enc)[0], size=desc.size, annotations=desc.annotations)
    with pytest.raises(encryption.DecryptionError, match="HMAC"):
        encryption.decrypt_layer(descriptor=forged, src=enc, dst=tmp_path / "plain", private_keys=[priv])
    assert not (tmp_path / "plain").exists()


def test_several_recipients_each_decrypt(
    tmp_path: Path, keypair: tuple[bytes, bytes], other_keypair: tuple[bytes, bytes]
) -> None:
    src = _layer(tmp_path, 777)
    pubs = [encryption.parse_public_key(keypair[1]), encryption.parse_public_key(other_keypair[1])]
    desc = encryption.encrypt_layer(src=src, dst=tmp_path / "enc", media_type=names.MEDIA_TYPE_OCI_LAYER_GZIP, recipients=pubs)
    assert desc.media_type == names.MEDIA_TYPE_OCI_LAYER_GZIP_ENCRYPTED
    for pair in (keypair, other_keypair):
        out = encryption.decrypt_layer(
            descriptor=desc, src=tmp_path / "enc", dst=tmp_path / "plain", private_keys=[encryption.parse_private_key(pair[0])]
        )
        assert out.media_type == names.MEDIA_TYPE_OCI_LAYER_GZIP
        assert (tmp_path / "plain").read_bytes() == src.read_bytes()


def test_key_loading(tmp_path: Path, keypair: tuple[bytes, bytes]) -> None:
    keys = tmp_path / "keys"
    encryption.write_private_key(path=keys / "node.key", pem=keypair[0])
    assert (keys / "node.key").stat().st_mode & 0o777 == 0o600
    (keys / "README").write_text("not a key")
    # A ConfigMap/Secret volume's symlink farm: each key is read once.
    data = keys / "..2026_01_01"
    data.mkdir()
    (data / "dup.key").write_bytes(keypair[0])
    (keys / "..data").symlink_to(data.name)
    assert len(encryption.load_private_keys(keys)) == 1
    assert encryption.load_private_keys(tmp_path / "missing") == []
    pubdir = tmp_path / "pub"
    pubdir.mkdir()
    (pubdir / "node.pem").write_bytes(keypair[1])
    assert len(encryption.load_public_keys([pubdir])) == 1
    (pubdir / "junk.pem").write_text("junk")
    with pytest.raises(encryption.EncryptionError, match=r"junk\.pem"):
        encryption.load_public_keys([pubdir])


# --- cross-checks with github.com/containers/ocicrypt ----------------------------------------------


@pytest.mark.parametrize("recipients", [1, 2])
def test_go_ocicrypt_decrypts_what_we_encrypt(
    tmp_path: Path, tool: Path, keypair: tuple[bytes, bytes], other_keypair: tuple[bytes, bytes], recipients: int
) -> None:
    priv, _ = _keyfiles(tmp_path, keypair, "node")
    other_priv, _ = _keyfiles(tmp_path, other_keypair, "other")
    src = _layer(tmp_path)
    pubs = [encryption.parse_public_key(keypair[1])]
    if recipients == 2:
        pubs.append(encryption.parse_public_key(other_keypair[1]))
    desc = encryption.encrypt_layer(src=src, dst=tmp_path / "enc", media_type=names.MEDIA_TYPE_OCI_LAYER_TAR, recipients=pubs)
    result = ocicrypt_check.go_decrypt(tool, descriptor=desc.to_json(), src=tmp_path / "enc", dst=tmp_path / "plain", keys=[priv])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["digest"] == sha256_file(src)[0]
    assert (tmp_path / "plain").read_bytes() == src.read_bytes()
    if recipients == 1:
        denied = ocicrypt_check.go_decrypt(
            tool, descriptor=desc.to_json(), src=tmp_path / "enc", dst=tmp_path / "plain2", keys=[other_priv]
        )
        assert denied.returncode != 0
        assert "No suitable private key" in denied.stderr or "no suitable" in denied.stderr.lower(), denied.stderr
    else:
        result = ocicrypt_check.go_decrypt(
            tool, descriptor=desc.to_json(), src=tmp_path / "enc", dst=tmp_path / "plain3", keys=[other_priv]
        )
        assert result.returncode == 0, result.stderr


def test_go_ocicrypt_detects_our_ciphertext_tampered(tmp_path: Path, tool: Path, keypair: tuple[bytes, bytes]) -> None:
    priv, _ = _keyfiles(tmp_path, keypair, "node")
    src = _layer(tmp_path, 50_000)
    enc = tmp_path / "enc"
    desc = encryption.encrypt_layer(
        src=src, dst=enc, media_type=names.MEDIA_TYPE_OCI_LAYER_TAR, recipients=[encryption.parse_public_key(keypair[1])]
    )
    data = bytearray(enc.read_bytes())
    data[-1] ^= 0x80
    enc.write_bytes(bytes(data))
    result = ocicrypt_check.go_decrypt(tool, descriptor=desc.to_json(), src=enc, dst=tmp_path / "plain", keys=[priv])
    assert result.returncode != 0
    assert "hmac" in result.stderr.lower(), result.stderr


@pytest.mark.parametrize("media_type", [names.MEDIA_TYPE_OCI_LAYER_TAR, names.MEDIA_TYPE_OCI_LAYER_GZIP])
def test_we_decrypt_what_go_ocicrypt_encrypts(
    tmp_path: Path, tool: Path, keypair: tuple[bytes, bytes], other_keypair: tuple[bytes, bytes], media_type: str
) -> None:
    _, pub = _keyfiles(tmp_path, keypair, "node")
    src = _layer(tmp_path)
    doc = ocicrypt_check.go_encrypt(tool, src=src, dst=tmp_path / "enc", media_type=media_type, recipients=[pub])
    desc = Descriptor.from_json(doc)
    assert desc.media_type == encryption.encrypted_media_type(media_type)
    out = encryption.decrypt_layer(
        descriptor=desc, src=tmp_path / "enc", dst=tmp_path / "plain", private_keys=[encryption.parse_private_key(keypair[0])]
    )
    assert out == encryption.DecryptedLayer(media_type=media_type, digest=sha256_file(src)[0], size=src.stat().st_size)
    assert (tmp_path / "plain").read_bytes() == src.read_bytes()
    with pytest.raises(encryption.NoMatchingKeyError):
        encryption.decrypt_layer(
            descriptor=desc,
            src=tmp_path / "enc",
            dst=tmp_path / "plain2",
            private_keys=[encryption.parse_private_key(other_keypair[0])],
        )


def test_volume_data_layers_are_encrypted_with_their_annotations(tmp_path: Path, keypair: tuple[bytes, bytes]) -> None:
    tar = _layer(tmp_path, 4096)
    digest, size = sha256_file(tar)
    layer = VolumeLayer(name="data", medium="Memory", path=tar, digest=digest, size=size)
    image = volume_data_image(layers=[layer], namespace="ns", pod="p", recipients=[encryption.parse_public_key(keypair[1])])
    ((desc, path),) = image.files
    assert path == tmp_path / ("layer.tar" + names.ENCRYPTED_LAYER_FILE_SUFFIX)
    assert desc.media_type == names.MEDIA_TYPE_VOLUME_DATA_LAYER + names.ENCRYPTED_MEDIA_TYPE_SUFFIX
    assert desc.annotations[names.ANNOTATION_VOLUME_NAME] == "data"
    assert desc.annotations[names.ANNOTATION_VOLUME_MEDIUM] == "Memory"
    found = volume_layers(parse_manifest(image.manifest_bytes))
    assert found["data"] == desc
    out = encryption.decrypt_layer(
        descriptor=desc, src=path, dst=tmp_path / "plain", private_keys=[encryption.parse_private_key(keypair[0])]
    )
    assert out.digest == digest and out.media_type == names.MEDIA_TYPE_VOLUME_DATA_LAYER


@pytest.mark.parametrize("parallel", [True, False], ids=["lanes", "one-thread"])
def test_a_layer_fed_in_pieces_decrypts_to_what_was_fed(tmp_path: Path, parallel: bool) -> None:
    """``LayerPass`` (the streamed upload's encryption) writes what ``decrypt_layer`` reads back, digests included."""
    private, public = encryption.new_keypair(bits=2048)
    data = os.urandom(3 * 1024 * 1024 + 17)
    layer = encryption.LayerPass(
        media_type=names.MEDIA_TYPE_OCI_LAYER_TAR, recipients=[encryption.parse_public_key(public)], parallel=parallel
    )
    enc = tmp_path / "enc"
    with enc.open("wb") as out:
        for i in range(0, len(data), 700_001):  # pieces that are not a multiple of the AES block
            out.write(layer.feed(data[i : i + 700_001]))
    blob, diff_id = layer.finish()
    assert diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert (blob.digest, blob.size) == sha256_file(enc)
    assert blob.media_type == names.MEDIA_TYPE_OCI_LAYER_TAR + "+encrypted"
    out = encryption.decrypt_layer(
        descriptor=blob, src=enc, dst=tmp_path / "plain", private_keys=[encryption.parse_private_key(private)]
    )
    assert out.digest == diff_id and (tmp_path / "plain").read_bytes() == data


def test_lanes_change_nothing_in_the_blob(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same key and nonce give the same blob, MAC and digests whether the hashes run in lanes or not."""
    _, public = encryption.new_keypair(bits=2048)
    data = os.urandom(2 * 1024 * 1024 + 5)
    monkeypatch.setattr(encryption.secrets, "token_bytes", lambda n: bytes(range(n)))
    passes = []
    for parallel in (True, False):
        layer = encryption.LayerPass(
            media_type=names.MEDIA_TYPE_OCI_LAYER_TAR, recipients=[encryption.parse_public_key(public)], parallel=parallel
        )
        out = b"".join(layer.feed(data[i : i + 300_000]) for i in range(0, len(data), 300_000))
        blob, diff_id = layer.finish()
        passes.append((out, blob.digest, blob.annotations[names.ANNOTATION_ENC_PUBOPTS], diff_id))
    assert passes[0] == passes[1]


def test_a_layer_pass_given_up_on_ends_its_lanes() -> None:
    _, public = encryption.new_keypair(bits=2048)
    before = {t.name for t in threading.enumerate()}
    with encryption.LayerPass(
        media_type=names.MEDIA_TYPE_OCI_LAYER_TAR, recipients=[encryption.parse_public_key(public)]
    ) as layer:
        layer.feed(os.urandom(4096))
    assert {t.name for t in threading.enumerate()} - before == set(), "no lane thread left behind"


def test_a_layer_pass_without_recipients_is_the_plaintext() -> None:
    layer = encryption.LayerPass(media_type=names.MEDIA_TYPE_OCI_LAYER_TAR)
    assert layer.feed(b"abc") == b"abc"
    blob, diff_id = layer.finish()
    assert blob.digest == diff_id == "sha256:" + hashlib.sha256(b"abc").hexdigest()
    assert blob.media_type == names.MEDIA_TYPE_OCI_LAYER_TAR and blob.size == 3
