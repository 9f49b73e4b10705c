"""Coverage-guided fuzzing of the safepoint reader with atheris (libFuzzer for Python).

Not part of the test suite (pytest does not collect it: no ``test_`` prefix). The
property is the one of ``test_fuzz.py``: for any input bytes, ``sp.loads``,
``sp.inspect`` and ``sp.verify`` return or raise a ``SafepointError``; any other
exception, a crash, a hang or a leak is a finding.

Run it (atheris needs a clang-built CPython or a wheel for your platform)::

    pip install atheris
    mkdir -p /tmp/sp-corpus
    python tests/adversarial/fuzz_reader.py --make-seeds /tmp/sp-corpus
    python tests/adversarial/fuzz_reader.py /tmp/sp-corpus \\
        -max_total_time=3600 -timeout=10 -rss_limit_mb=4096 -max_len=200000

Byte mutations rarely get past the checksums, which is what they are for. To fuzz
the decoder and the type handlers behind them, fuzz the manifest alone: with
``SP_FUZZ_MODE=manifest`` each input is taken as the manifest JSON and wrapped in a
valid file (fresh checksums, the buffers of the seed files), as an attacker would::

    python tests/adversarial/fuzz_reader.py --make-manifest-seeds /tmp/sp-manifests
    SP_FUZZ_MODE=manifest python tests/adversarial/fuzz_reader.py /tmp/sp-manifests \
        -max_total_time=3600 -timeout=10 -rss_limit_mb=4096 -dict=... (optional)

libFuzzer writes a reproducer (``crash-*``, ``timeout-*``, ``oom-*``) into the
current folder on a finding; replay one with::

    python tests/adversarial/fuzz_reader.py crash-<hash>

``-timeout`` turns hangs into findings and ``-rss_limit_mb`` turns unbounded
allocations (a missed size check) into findings. ``--make-seeds DIR`` writes a few
valid files (small dicts, a tree, a compressed file, a signed file) as the starting
corpus; libFuzzer mutates them, and also the manifest JSON inside them.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # spcraft


def make_seeds(folder: str) -> None:
    import numpy as np
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.tree import DecisionTreeClassifier

    import safepoint as sp

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = (X[:, 0] > 0).astype(int)
    seeds = {
        "small.sp": {"a": np.arange(6), "s": ["x", None], "b": b"\x00", "t": (1.5, 2**70)},
        "tree.sp": DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y),
        "knn.sp": KNeighborsClassifier(algorithm="kd_tree", leaf_size=5).fit(X, y),
        "vocab.sp": {f"term{i}": i for i in range(200)},
    }
    os.makedirs(folder, exist_ok=True)
    for name, obj in seeds.items():
        sp.dump(obj, os.path.join(folder, name))
    sp.dump({"z": np.zeros(20_000)}, os.path.join(folder, "zstd.sp"), compress="zstd")
    sp.dump(seeds["small.sp"], os.path.join(folder, "signed.sp"), key=b"k" * 32)


def _seed_files() -> list[bytes]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        make_seeds(tmp)
        out = []
        for name in sorted(os.listdir(tmp)):
            with open(os.path.join(tmp, name), "rb") as f:
                out.append(f.read())
        return out


def make_manifest_seeds(folder: str) -> None:
    import json

    from spcraft import Crafted

    os.makedirs(folder, exist_ok=True)
    for i, data in enumerate(_seed_files()):
        c = Crafted.from_bytes(data)
        with open(os.path.join(folder, f"manifest-{i}.json"), "wb") as f:
            f.write(json.dumps(c.manifest).encode())


def _wrapper() -> Any:
    """input bytes -> a valid file holding them as its manifest (manifest mode)."""
    import json

    from spcraft import Crafted

    payloads: list[bytes] = []
    codecs: list[str] = []
    raw_lengths: list[int] = []
    for data in _seed_files():
        c = Crafted.from_bytes(data)
        payloads += c.payloads
        codecs += c.codecs
        raw_lengths += c.raw_lengths
    base = Crafted({}, payloads, codecs, raw_lengths)
    table: list[Any] = []
    base.to_bytes(table_hook=table.extend)

    def wrap(body: bytes) -> bytes:
        # the buffer table is appended to the fuzzed JSON object when it is one
        try:
            manifest = json.loads(body)
        except (ValueError, RecursionError):
            return base.to_bytes(manifest_bytes=body)
        if isinstance(manifest, dict):
            manifest.setdefault("buffers", table)
            try:
                return base.to_bytes(manifest_bytes=json.dumps(manifest).encode())
            except (ValueError, RecursionError):
                pass
        return base.to_bytes(manifest_bytes=body)

    return wrap


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--make-seeds":
        make_seeds(sys.argv[2])
        return
    if len(sys.argv) == 3 and sys.argv[1] == "--make-manifest-seeds":
        make_manifest_seeds(sys.argv[2])
        return

    import atheris

    # coverage of safepoint itself (instrumenting numpy and scikit-learn too is slow)
    with atheris.instrument_imports(include=["safepoint"]):
        import safepoint as sp
        from safepoint.errors import SafepointError

    # after the instrumented import: the wrapper imports safepoint too
    wrap = _wrapper() if os.environ.get("SP_FUZZ_MODE") == "manifest" else None

    # warm the lazy imports (scikit-learn, pandas, zstandard) before the timed inputs:
    # a first import takes seconds and would read as a hang
    import importlib

    for name in ("pandas", "scipy.sparse", "zstandard", "sklearn.tree", "sklearn.neighbors"):
        importlib.import_module(name)
    seeds = [a for a in sys.argv[1:] if not a.startswith("-") and os.path.isdir(a)]
    for folder in seeds:
        for entry in sorted(os.listdir(folder))[:20]:
            with open(os.path.join(folder, entry), "rb") as f:
                try:
                    sp.loads(f.read())
                except SafepointError:
                    pass

    def one_input(data: bytes) -> None:
        if wrap is not None:
            data = wrap(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for fn in (sp.loads, sp.inspect, sp.verify):
                try:
                    fn(data)
                except SafepointError:
                    pass

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
