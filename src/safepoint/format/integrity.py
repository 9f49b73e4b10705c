"""Checksums and signatures.

Three levels, see docs/security.md:

* always: an xxh3-64 checksum per buffer and for the manifest. It detects
  corruption (bit rot, truncation, a bad copy), not an attacker, who can recompute it.
* ``key=b"secret"``: a BLAKE2b-256 digest per buffer and an HMAC-SHA256 over the
  manifest (which holds those digests). Detects tampering by anyone without the key.
* ``key=Ed25519PrivateKey`` when writing, ``key=Ed25519PublicKey`` when reading:
  a public-key signature over the manifest, for publisher/consumer setups
  (needs the ``sign`` extra: ``pip install safepoint[sign]``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import xxhash

from ..errors import IntegrityError, InvalidKeyError

__all__ = ["Signer", "checksum", "make_signer", "verify_auth_block"]


def checksum(data: Any) -> str:
    """xxh3-64 of a bytes-like object, as 16 hex digits."""
    return xxhash.xxh3_64_hexdigest(data)


def strong_digest(data: Any) -> str:
    """BLAKE2b-256 of a bytes-like object (used when a key is given)."""
    return hashlib.blake2b(data, digest_size=32).hexdigest()


class Signer:
    """Signs manifest bytes; ``kind`` is recorded so a reader knows what to check."""

    kind: str

    def sign(self, manifest: bytes) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError


class HmacSigner(Signer):
    kind = "hmac-sha256"

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise InvalidKeyError(
                f"an HMAC key must have at least 16 bytes, got {len(key)}: "
                "use secrets.token_bytes(32)"
            )
        self.key = key

    def sign(self, manifest: bytes) -> bytes:
        return hmac.new(self.key, manifest, hashlib.sha256).digest()


class Ed25519Signer(Signer):
    kind = "ed25519"

    def __init__(self, private_key: Any) -> None:
        self.private_key = private_key

    def sign(self, manifest: bytes) -> bytes:
        return bytes(self.private_key.sign(manifest))


def _ed25519_types() -> tuple[type, type] | None:
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import (
            Ed25519PrivateKey,
            Ed25519PublicKey,
        )
    except ImportError:  # pragma: no cover - depends on the extra
        return None
    return Ed25519PrivateKey, Ed25519PublicKey


def make_signer(key: Any) -> Signer | None:
    """Turn a ``key=`` argument of ``dump`` into a :class:`Signer`."""
    if key is None:
        return None
    if isinstance(key, str):
        key = key.encode()
    if isinstance(key, bytes | bytearray):
        return HmacSigner(bytes(key))
    types = _ed25519_types()
    if types is not None and isinstance(key, types[0]):
        return Ed25519Signer(key)
    raise InvalidKeyError(
        f"key must be bytes (HMAC) or an Ed25519PrivateKey, not {type(key).__name__}"
    )


def encode_auth_block(signer: Signer, manifest: bytes) -> bytes:
    sig = signer.sign(manifest)
    return json.dumps({"alg": signer.kind, "sig": sig.hex()}).encode()


def _parse_auth_block(block: bytes) -> tuple[Any, bytes]:
    """(alg, signature bytes) of a signature block; ValueError if it is malformed.

    The block is the file's (up to 64 KiB of anything): deeply nested JSON raised
    RecursionError here, found by the fuzzing campaign.
    """
    try:
        info = json.loads(block)
        if not isinstance(info, dict):
            raise ValueError("not a JSON object")
        alg = info["alg"]
        sig = bytes.fromhex(info["sig"])
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise ValueError(str(exc) or type(exc).__name__) from None
    if not isinstance(alg, str):
        raise ValueError("the algorithm is not a name")
    return alg, sig


def claimed_signature(block: bytes | None, manifest_claim: Any) -> str | None:
    """The algorithm a file *claims* to be signed with: its signature block must be
    well-formed and name the same algorithm as the manifest. Nothing is verified
    (that needs the key): a claim is state from the file, which anyone can write, so
    it is only ever shown as a claim (``Inspection.signature_claimed``), never as
    ``signed``; a junk block claims nothing."""
    if block is None or manifest_claim not in (HmacSigner.kind, Ed25519Signer.kind):
        return None
    try:
        alg, sig = _parse_auth_block(block)
    except ValueError:
        return None
    expected = 32 if alg == HmacSigner.kind else 64
    return alg if alg == manifest_claim and len(sig) == expected else None


def verify_auth_block(block: bytes | None, manifest: bytes, key: Any) -> str | None:
    """Check the signature block against ``key``; returns the algorithm or raises.

    Without a key nothing is verified (the buffer checksums still are).
    """
    if key is None:
        return None
    if block is None:
        raise IntegrityError(
            "a key was given but the file is not signed: it was written without key=, "
            "so its origin cannot be verified"
        )
    try:
        alg, sig = _parse_auth_block(block)
    except ValueError as exc:
        raise IntegrityError(f"the signature block is malformed: {exc}") from None
    if isinstance(key, str):
        key = key.encode()
    if isinstance(key, bytes | bytearray):
        if alg != HmacSigner.kind:
            raise IntegrityError(f"the file is signed with {alg}, but an HMAC key was given")
        expected = hmac.new(bytes(key), manifest, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, sig):
            raise IntegrityError(
                "HMAC signature mismatch: the file was modified after signing, or the key is wrong"
            )
        return alg
    types = _ed25519_types()
    if types is not None and isinstance(key, types[1]):
        if alg != Ed25519Signer.kind:
            raise IntegrityError(f"the file is signed with {alg}, but an Ed25519 key was given")
        from cryptography.exceptions import InvalidSignature

        public: Any = key
        try:
            public.verify(sig, manifest)
        except InvalidSignature:
            raise IntegrityError(
                "Ed25519 signature mismatch: the file was modified after signing, "
                "or it was signed by another key"
            ) from None
        return alg
    raise InvalidKeyError(
        f"key must be bytes (HMAC) or an Ed25519PublicKey, not {type(key).__name__}"
    )
