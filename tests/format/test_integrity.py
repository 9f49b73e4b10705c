"""Integrity: checksums catch corruption; keys (HMAC, Ed25519) catch tampering.

The attacker here is realistic: they rewrite buffers and manifests *and* recompute
every xxh3 checksum (tests/adversarial/spcraft.py does exactly that), and may keep
the original signature block. Without a key such a file loads (checksums are not a
defence against an attacker: docs/security.md); with the right key it never does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import safepoint as sp
from safepoint.errors import IntegrityError, InvalidKeyError, SafepointError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "adversarial"))
from spcraft import FOOTER, Crafted, regions

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore")]

KEY = b"0123456789abcdef0123456789abcdef"
OBJ = {"w": np.arange(100, dtype=np.float64), "name": "model", "lr": 0.1}


def _tampered_buffer(data: bytes) -> bytes:
    """Change the weights; recompute the checksums; keep the signature block."""
    c = Crafted.from_bytes(data)
    w = c.array(c.manifest["root"]["s"]["w"])
    w[0] = 1e9
    c.set_array(c.manifest["root"]["s"]["w"], w)
    return c.to_bytes(auth=c.auth, digests=True)


def _tampered_manifest(data: bytes) -> bytes:
    c = Crafted.from_bytes(data)
    c.manifest["root"]["s"]["lr"] = 10.0
    return c.to_bytes(auth=c.auth, digests=True)


# -- HMAC -------------------------------------------------------------------------------
def test_hmac_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "m.sp"
    sp.dump(OBJ, path, key=KEY)
    out = sp.load(path, key=KEY)
    np.testing.assert_array_equal(out["w"], OBJ["w"])
    # inspect reports a signature only by checking it
    assert sp.inspect(path).signed is None
    assert sp.inspect(path).signature_claimed == "hmac-sha256"
    assert sp.inspect(path, key=KEY).signed == "hmac-sha256"
    with pytest.raises(sp.IntegrityError):
        sp.inspect(path, key=b"another key")
    report = sp.verify(path, key=KEY)
    assert report.ok and report.signed == "hmac-sha256", report
    # a str key is the same key, UTF-8 encoded
    assert sp.load(path, key=KEY.decode())["lr"] == 0.1
    # without a key, a signed file loads like any other (the checksums still hold)
    assert sp.load(path)["name"] == "model"


def test_the_attack_works_without_a_key() -> None:
    """Checksums detect corruption, not an attacker: this is why keys exist."""
    data = sp.dumps(OBJ, key=KEY)
    assert sp.loads(_tampered_buffer(data))["w"][0] == 1e9
    assert sp.loads(_tampered_manifest(data))["lr"] == 10.0


@pytest.mark.parametrize("tamper", [_tampered_buffer, _tampered_manifest])
def test_hmac_detects_tampering(tamper: Any) -> None:
    bad = tamper(sp.dumps(OBJ, key=KEY))
    with pytest.raises(IntegrityError, match="HMAC"):
        sp.loads(bad, key=KEY)
    report = sp.verify(bad, key=KEY)
    assert not report.ok and any("HMAC" in p for p in report.problems)


def test_hmac_detects_a_changed_buffer_with_the_old_manifest() -> None:
    """Keep the signed manifest, change the bytes of a buffer: the checksum catches it."""
    data = bytearray(sp.dumps(OBJ, key=KEY))
    start = regions(bytes(data))["buffers"][0]
    data[start + 3] ^= 0x40
    with pytest.raises(IntegrityError):
        sp.loads(bytes(data), key=KEY)


def test_wrong_key() -> None:
    data = sp.dumps(OBJ, key=KEY)
    with pytest.raises(IntegrityError, match="key is wrong"):
        sp.loads(data, key=b"another key of 32 bytes........!")


def test_attacker_signs_with_their_own_key() -> None:
    c = Crafted.from_bytes(sp.dumps(OBJ, key=KEY))
    c.manifest["root"]["s"]["lr"] = 10.0
    forged = c.to_bytes(key=b"the attacker's key, 32 bytes....")
    with pytest.raises(IntegrityError):
        sp.loads(forged, key=KEY)


def test_unsigned_file_with_a_key() -> None:
    with pytest.raises(IntegrityError, match="not signed"):
        sp.loads(sp.dumps(OBJ), key=KEY)


def test_stripped_signature() -> None:
    """Removing the signature block does not turn a signed file into a trusted one."""
    c = Crafted.from_bytes(sp.dumps(OBJ, key=KEY))
    c.manifest["signed"] = None
    stripped = c.to_bytes(digests=True)
    with pytest.raises(IntegrityError, match="not signed"):
        sp.loads(stripped, key=KEY)


@pytest.mark.parametrize(
    "block",
    [
        b"not json",
        b"{}",
        b'{"alg": "hmac-sha256"}',
        b'{"alg": "hmac-sha256", "sig": "zz"}',
        b'{"alg": "none", "sig": ""}',
        b'["hmac-sha256", "00"]',
        b'{"alg": 1, "sig": 2}',
    ],
)
def test_malformed_signature_blocks(block: bytes) -> None:
    c = Crafted.from_bytes(sp.dumps(OBJ, key=KEY))
    data = c.to_bytes(auth=block, digests=True)
    with pytest.raises(IntegrityError):
        sp.loads(data, key=KEY)


def test_signature_block_placement_is_checked() -> None:
    data = sp.dumps(OBJ, key=KEY)
    names = ["mo", "ml", "mr", "mc", "ao", "al", "major", "minor", "flags", "magic"]
    vals = dict(zip(names, FOOTER.unpack_from(data, len(data) - 64), strict=True))
    for ao, al in ((vals["mo"], vals["al"]), (len(data), 10), (vals["ao"], 2**20)):
        crafted = data[:-64] + FOOTER.pack(*(dict(vals, ao=ao, al=al)[n] for n in names))
        with pytest.raises(SafepointError):
            sp.loads(crafted, key=KEY)


def test_weak_or_wrong_keys_are_refused() -> None:
    with pytest.raises(InvalidKeyError, match="16 bytes"):
        sp.dumps(OBJ, key=b"short")
    with pytest.raises(InvalidKeyError):
        sp.dumps(OBJ, key=12345)
    with pytest.raises(InvalidKeyError):
        sp.loads(sp.dumps(OBJ, key=KEY), key=["not", "a", "key"])


def test_signed_compressed_file(tmp_path: Path) -> None:
    obj = {"z": np.zeros(100_000), "v": {f"t{i}": i for i in range(5000)}}
    data = sp.dumps(obj, key=KEY, compress="zstd")
    assert sp.inspect(data).compressed_buffers >= 1
    assert sp.loads(data, key=KEY)["v"]["t7"] == 7
    c = Crafted.from_bytes(data)
    c.manifest["root"]["s"]["v"] = 1
    with pytest.raises(IntegrityError):
        sp.loads(c.to_bytes(auth=c.auth, digests=True, zstd_manifest=True), key=KEY)


# -- Ed25519: publisher and consumer ------------------------------------------------
@pytest.fixture(scope="module")
def keypair() -> tuple[Any, Any]:
    ed = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.ed25519")
    private = ed.Ed25519PrivateKey.generate()
    return private, private.public_key()


def test_ed25519_publisher_consumer(tmp_path: Path, keypair: tuple[Any, Any]) -> None:
    private, public = keypair
    path = tmp_path / "published.sp"
    sp.dump(OBJ, path, key=private)  # the publisher holds the private key
    assert sp.inspect(path, key=public).signed == "ed25519"
    assert sp.inspect(path).signature_claimed == "ed25519"
    np.testing.assert_array_equal(sp.load(path, key=public)["w"], OBJ["w"])
    assert sp.verify(path, key=public).ok


@pytest.mark.parametrize("tamper", [_tampered_buffer, _tampered_manifest])
def test_ed25519_detects_tampering(keypair: tuple[Any, Any], tamper: Any) -> None:
    private, public = keypair
    bad = tamper(sp.dumps(OBJ, key=private))
    with pytest.raises(IntegrityError, match="Ed25519"):
        sp.loads(bad, key=public)


def test_ed25519_other_publisher(keypair: tuple[Any, Any]) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    _, public = keypair
    other = sp.dumps(OBJ, key=Ed25519PrivateKey.generate())
    with pytest.raises(IntegrityError, match="another key"):
        sp.loads(other, key=public)


def test_key_kinds_do_not_mix(keypair: tuple[Any, Any]) -> None:
    private, public = keypair
    with pytest.raises(IntegrityError, match="HMAC key"):
        sp.loads(sp.dumps(OBJ, key=private), key=KEY)
    with pytest.raises(IntegrityError, match="Ed25519 key"):
        sp.loads(sp.dumps(OBJ, key=KEY), key=public)
    # a consumer passes the public key; the private key is the publisher's
    with pytest.raises(InvalidKeyError):
        sp.loads(sp.dumps(OBJ, key=private), key=private)


# -- memory-mapped buffers: checked on demand by verify ------------------------------
def _corrupt_big_buffer(path: Path) -> None:
    data = path.read_bytes()
    manifest = json.loads(data[slice(*regions(data)["manifest"])])
    big = max(manifest["buffers"], key=lambda row: row[1])
    assert big[1] > 2**20 and big[3] == "raw"
    with open(path, "r+b") as f:
        f.seek(big[0] + 8)
        f.write(b"\x00\x00\x00\x00\x00\x00\xf0\x7f")  # the second float becomes inf


@pytest.mark.parametrize("signed", [False, True])
def test_verify_reports_what_mmap_load_did_not_check(tmp_path: Path, signed: bool) -> None:
    path = tmp_path / "big.sp"
    arr = np.arange(300_000, dtype=np.float64)  # 2.4 MB: mapped
    key = KEY if signed else None
    sp.dump({"big": arr, "small": np.arange(3)}, path, key=key)
    assert sp.verify(path, key=key).ok
    _corrupt_big_buffer(path)
    # an eager load reads and checks every buffer
    with pytest.raises(IntegrityError, match="checksum"):
        sp.load(path, key=key)
    if signed:
        # with a key, a memory-mapped load checks the mapped buffers' digests too
        with pytest.raises(IntegrityError):
            sp.load(path, mmap=True, key=key)
    # without one it maps the big array without reading it: it is not checked
    loaded = sp.load(path, mmap=True)
    assert not loaded["big"].flags.owndata and not loaded["big"].flags.writeable
    assert np.isinf(loaded["big"][1])
    # ... and verify, run on demand, reports it
    report = sp.verify(path, key=key)
    assert not report.ok
    assert report.checked_buffers == 2
    assert any("checksum" in p for p in report.problems), report.problems
    del loaded


@pytest.mark.slow
def test_cli_verify_exit_code(tmp_path: Path) -> None:
    path = tmp_path / "big.sp"
    sp.dump({"big": np.arange(300_000, dtype=np.float64)}, path)
    ok = subprocess.run(
        [sys.executable, "-m", "safepoint.cli", "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    _corrupt_big_buffer(path)
    bad = subprocess.run(
        [sys.executable, "-m", "safepoint.cli", "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert bad.returncode != 0
    assert "checksum" in (bad.stdout + bad.stderr)


def test_problems_against_names_a_different_digest_first(tmp_path: Path) -> None:
    from safepoint.format.reader import open_reader, problems_against

    path = tmp_path / "a.sp"
    sp.dump({"w": np.arange(4096, dtype=np.float64)}, path)
    reader = open_reader(str(path))
    digest = reader.digest
    reader.close()
    assert problems_against(str(path), digest) == []
    assert problems_against(str(path), "0" * 32) == [f"its digest is {digest}"]
