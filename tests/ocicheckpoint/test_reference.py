"""Image references in the forms every client accepts."""

from __future__ import annotations

from ocicheckpoint.reference import parse_reference

DIGEST = "sha256:" + "ab" * 32


def test_a_reference_with_a_digest_names_the_digest_only() -> None:
    """containers/image (CRI-O, Podman, skopeo) refuses repo:tag@digest; the digest alone is exact."""
    ref = parse_reference(f"127.0.0.1:5000/ckpt/ns/pod:web-1@{DIGEST}")
    assert (ref.tag, ref.digest) == ("web-1", DIGEST)
    assert str(ref) == f"127.0.0.1:5000/ckpt/ns/pod@{DIGEST}"
    assert parse_reference(str(ref)).digest == DIGEST


def test_a_reference_without_a_digest_keeps_its_tag() -> None:
    assert str(parse_reference("registry.example.com/podmigrate:0.1.0")) == "registry.example.com/podmigrate:0.1.0"
    assert str(parse_reference("registry.example.com/podmigrate")) == "registry.example.com/podmigrate"
