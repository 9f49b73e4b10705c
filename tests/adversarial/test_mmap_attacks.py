"""Memory-mapped loads: what a file changed after its checks can and cannot do.

* Arrays that a bounds check vouches for (sparse indices and pointers, categorical
  and MultiIndex codes, tree nodes, SVM support indices) are copied into private
  memory, never mapped: rewriting the file in place after the load cannot make
  compiled code read out of bounds.
* ``mmap=True`` with ``key=`` checks the mapped buffers' signed digests before
  returning; ``Store.get(mmap=True)`` checks their checksums as a plain ``get`` does.
"""

from __future__ import annotations

import mmap
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sps

import safepoint as sp

N = 400_000  # int32 indices of 1.6 MB: above the 1 MiB mapping threshold


def _big_csr() -> sps.csr_matrix:
    rng = np.random.RandomState(0)
    rows = 1000
    indptr = np.linspace(0, N, rows + 1).astype(np.int32)
    indices = rng.randint(0, 5000, size=N).astype(np.int32)
    data = rng.normal(size=N)
    return sps.csr_matrix((data, indices, indptr), shape=(rows, 5000))


def _private(arr: np.ndarray) -> bool:
    """Not backed by the file: no memory map anywhere down its chain of bases."""
    b: object = arr
    while b is not None:
        if isinstance(b, mmap.mmap):
            return False
        b = b.obj if isinstance(b, memoryview) else getattr(b, "base", None)
    return True


def test_validated_arrays_are_never_mapped(tmp_path: Path) -> None:
    csr = _big_csr()
    cats = pd.Categorical.from_codes(np.arange(N) % 7, categories=list("abcdefg"))
    mi = pd.MultiIndex.from_arrays([np.arange(N) % 3, np.arange(N) % 5])
    path = tmp_path / "m.sp"
    sp.dump({"csr": csr, "coo": csr.tocoo(), "cat": cats, "mi": mi, "big": np.ones(N)}, path)
    got = sp.load(path, mmap=True)
    assert not _private(got["big"])  # plain data is mapped
    for arr in (got["csr"].indices, got["csr"].indptr, *got["coo"].coords):
        assert _private(arr), "sparse indices must not stay mapped"
    assert _private(np.asarray(got["cat"].codes))
    assert all(_private(np.asarray(c)) for c in got["mi"].codes)


def test_rewriting_a_mapped_file_cannot_corrupt_a_checked_index(tmp_path: Path) -> None:
    """After an mmap load, the file's sparse indices are overwritten in place with
    out-of-range values; the loaded matrix still multiplies correctly (in a child
    process: were the indices mapped, this would crash it)."""
    csr = _big_csr()
    path = tmp_path / "m.sp"
    sp.dump(csr, path)
    want = csr @ np.ones(5000)
    raw = path.read_bytes()
    needle = csr.indices.tobytes()[:64]
    at = raw.index(needle)
    code = textwrap.dedent(
        f"""
        import numpy as np, safepoint as sp
        m = sp.load({str(path)!r}, mmap=True)
        with open({str(path)!r}, "r+b") as f:
            f.seek({at})
            f.write(np.full({N}, 2**30, dtype=np.int32).tobytes())
        np.save(sys.stdout.buffer, m @ np.ones(5000))
        """
    ).replace("import numpy", "import sys, numpy")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()[-500:]
    import io

    np.testing.assert_array_equal(np.load(io.BytesIO(proc.stdout)), want)


def test_mmap_with_key_checks_the_mapped_digests(tmp_path: Path) -> None:
    key = b"k" * 32
    arr = np.arange(N, dtype=np.float64)
    path = tmp_path / "signed.sp"
    sp.dump({"w": arr}, path, key=key)
    assert sp.load(path, mmap=True, key=key)["w"][5] == 5.0
    raw = bytearray(path.read_bytes())
    at = raw.index(arr[1000:1008].tobytes())
    raw[at] ^= 0xFF  # in the data region only: the signed manifest is untouched
    path.write_bytes(bytes(raw))
    with pytest.raises(sp.IntegrityError):
        sp.load(path, mmap=True, key=key)
    # without a key a mapped buffer is checked on demand only (documented) ...
    assert sp.load(path, mmap=True)["w"].shape == (N,)
    # ... or when asked
    with pytest.raises(sp.IntegrityError):
        sp.load(path, mmap=True, verify_mapped=True)


def test_store_get_mmap_checks_checksums(tmp_path: Path) -> None:
    store = sp.Store(tmp_path / "store")
    arr = np.arange(N, dtype=np.float64)
    store.put("m", {"w": arr})
    assert store.get("m", mmap=True)["w"][7] == 7.0
    blob = next(p for p in (tmp_path / "store").rglob("*") if p.is_file() and p.stat().st_size > N)
    raw = bytearray(blob.read_bytes())
    at = raw.index(arr[2000:2008].tobytes())
    raw[at] ^= 0xFF
    blob.chmod(0o644)
    blob.write_bytes(bytes(raw))
    for mapped in (False, True):
        with pytest.raises(sp.IntegrityError):
            store.get("m", mmap=mapped)


def test_huge_n_jobs_is_normalised() -> None:
    from sklearn.ensemble import RandomForestClassifier
    from spcraft import Crafted

    X = np.random.RandomState(0).normal(size=(40, 3))
    y = (X[:, 0] > 0).astype(int)
    c = Crafted.from_bytes(sp.dumps(RandomForestClassifier(n_estimators=3, n_jobs=2).fit(X, y)))
    c.manifest["root"]["s"]["s"]["n_jobs"] = 10**9
    model = sp.loads(c.to_bytes())
    assert model.n_jobs == -1
    assert model.predict(X).shape == (40,)
    c.manifest["root"]["s"]["s"]["n_jobs"] = "many"
    with pytest.raises(sp.FormatError, match="n_jobs"):
        sp.loads(c.to_bytes())


def test_inspect_does_not_claim_a_junk_signature() -> None:
    from spcraft import Crafted

    signed = sp.dumps({"a": 1}, key=b"k" * 32)
    assert sp.inspect(signed, key=b"k" * 32).signed == "hmac-sha256"
    assert sp.inspect(signed).signature_claimed == "hmac-sha256"
    c = Crafted.from_bytes(sp.dumps({"a": 1}))
    c.manifest["signed"] = "ed25519"
    junk = c.to_bytes(auth=b'{"alg": "ed25519", "sig": "00"}')
    assert sp.inspect(junk).signed is None
    assert sp.inspect(junk).signature_claimed is None
    assert sp.inspect(c.to_bytes(auth=b"garbage")).signature_claimed is None


def test_inspect_reports_a_signature_only_by_checking_it() -> None:
    """A well-formed block of zeros claiming HMAC (nobody signed it) is not "signed"."""
    from spcraft import Crafted

    c = Crafted.from_bytes(sp.dumps({"a": 1}))
    c.manifest["signed"] = "hmac-sha256"
    forged = c.to_bytes(auth=b'{"alg": "hmac-sha256", "sig": "' + b"00" * 32 + b'"}')
    info = sp.inspect(forged)
    assert info.signed is None
    assert info.signature_claimed == "hmac-sha256"  # a claim, shown as one
    with pytest.raises(sp.IntegrityError, match="mismatch"):
        sp.inspect(forged, key=b"k" * 32)
    with pytest.raises(sp.IntegrityError, match="mismatch"):
        sp.loads(forged, key=b"k" * 32)
