"""Counts that expand: no file may make a load build more than a stated multiple of its
own size in Python objects (``Limits.max_expansion`` x size + 64 MiB, docs/security.md).

Each bomb is a small file that declares a huge count: a compressed manifest of
millions of empty nodes, an object table of 10^8 objects with no columns, a
string column of tens of millions of items over a compressed buffer of zeros.
Each is loaded in a child process whose address space is capped a little above
what it uses before the load: the load must raise ``LimitExceededError`` and the
process must survive (a bomb that allocated first and checked later would be
killed by the cap, or raise MemoryError).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import zstandard
from spcraft import Crafted

import safepoint as sp

HERE = Path(__file__).resolve().parent

#: extra address space the child may use during the load (the bombs would need GBs)
CAP_BYTES = 768 * 2**20


def load_capped(path: Path, cap: int = CAP_BYTES) -> tuple[int, str]:
    """Load ``path`` in a child process with ``cap`` bytes of address space above what
    it already uses; returns (exit code, the exception class name or "loaded")."""
    code = textwrap.dedent(
        f"""
        import resource, sys
        import numpy, pandas, scipy.sparse, sklearn.tree  # imports before the cap
        import safepoint as sp
        with open("/proc/self/status") as f:
            vm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))
        resource.setrlimit(resource.RLIMIT_AS, (vm + {cap}, vm + {cap}))
        try:
            sp.load({str(path)!r})
        except Exception as exc:
            print(type(exc).__name__, str(exc)[:300])
        else:
            print("loaded")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=HERE
    )
    return proc.returncode, (proc.stdout.strip() or proc.stderr.strip()[-500:])


@pytest.mark.slow
def test_node_count_bomb(tmp_path: Path) -> None:
    """A compressed manifest of ~10 million empty nodes (a few kB on disk)."""
    base = Crafted.from_bytes(sp.dumps([1]))
    manifest = dict(base.manifest)
    manifest["buffers"] = []
    n = 10_000_000
    body = json.dumps({**manifest, "root": None}).encode()
    raw = body[:-1] + b',"bomb":[' + b"{}," * (n - 1) + b"{}]}"
    packed = zstandard.ZstdCompressor(level=3).compress(raw)
    assert len(packed) < 100_000
    path = tmp_path / "nodes.sp"
    path.write_bytes(base.to_bytes(manifest_bytes=raw, zstd_manifest=True))
    with pytest.raises(sp.LimitExceededError, match="manifest's nodes"):
        sp.inspect(path)
    rc, out = load_capped(path)
    assert rc == 0 and out.startswith("LimitExceededError"), out


@pytest.mark.slow
def test_object_table_bomb(tmp_path: Path) -> None:
    """A few hundred bytes declaring an object table of 10^8 objects without columns."""
    from sklearn.tree import DecisionTreeClassifier

    trees = [DecisionTreeClassifier(max_depth=1).fit([[0], [1]], [0, 1]) for _ in range(16)]
    c = Crafted.from_bytes(sp.dumps(trees))
    table = c.manifest["root"]
    assert table["@"] == "objtab"
    table.update(n=10**8, k=[], c=[])
    c.payloads, c.codecs, c.raw_lengths = [], [], []
    path = tmp_path / "table.sp"
    path.write_bytes(c.to_bytes())
    assert path.stat().st_size < 4096
    with pytest.raises(sp.LimitExceededError, match="object table"):
        sp.load(path)
    rc, out = load_capped(path)
    assert rc == 0 and out.startswith("LimitExceededError"), out


@pytest.mark.slow
def test_string_count_bomb(tmp_path: Path) -> None:
    """A string column of 30 million empty strings over a compressed buffer of NULs."""
    c = Crafted.from_bytes(sp.dumps(np.array(["a", "b"], dtype=object)))
    node = c.manifest["root"]
    n = 30_000_000
    node["n"] = n
    node["s"] = [n]
    c.set_raw(node["b"], b"\x00" * (n - 1), codec="zstd")
    path = tmp_path / "strings.sp"
    path.write_bytes(c.to_bytes())
    assert path.stat().st_size < 50_000
    with pytest.raises(sp.LimitExceededError, match="strings"):
        sp.load(path)
    rc, out = load_capped(path)
    assert rc == 0 and out.startswith("LimitExceededError"), out


@pytest.mark.slow
def test_the_budget_admits_real_models() -> None:
    """A large vocabulary, many trees, a long list: well within max_expansion."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.feature_extraction.text import TfidfVectorizer

    rng = np.random.RandomState(0)
    words = [f"w{i}" for i in range(50_000)]
    docs = [" ".join(rng.choice(words, 30)) for _ in range(2_000)]
    for compress in (None, "zstd"):
        tfidf = TfidfVectorizer().fit(docs)
        assert sp.loads(sp.dumps(tfidf, compress=compress)).vocabulary_ == tfidf.vocabulary_
        X = rng.normal(size=(300, 4))
        hgb = HistGradientBoostingClassifier(max_iter=200).fit(X, X[:, 0] > 0)
        sp.loads(sp.dumps(hgb, compress=compress))
        values = [f"s{i}" for i in range(200_000)]
        assert sp.loads(sp.dumps(values, compress=compress)) == values


def test_max_expansion_is_a_limit_the_caller_can_raise(tmp_path: Path) -> None:
    values = ["x"] * 2_000_000
    data = sp.dumps(values, compress="zstd")
    assert len(data) < 100_000  # 2 million strings from a few kB
    with pytest.raises(sp.LimitExceededError, match="max_expansion"):
        sp.loads(data)
    assert sp.loads(data, limits=sp.Limits(max_expansion=100_000)) == values
