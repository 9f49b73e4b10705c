"""Coverage-guided fuzzing of the safepoint reader with atheris (libFuzzer for Python).

Not part of the test suite (pytest does not collect it: no ``test_`` prefix). The
property is the one of ``test_fuzz.py``: for any input bytes, ``sp.loads``,
``sp.inspect`` and ``sp.verify`` return or raise a ``SafepointError``; any other
exception, a crash, a hang or a leak is a finding.

Run it (atheris needs a clang-built CPython or a wheel for your platform)::

    pip install atheris   # or: pip install -e '.[test]'
    python tests/adversarial/fuzz_reader.py --make-seeds /tmp/sp-corpus
    python tests/adversarial/fuzz_reader.py /tmp/sp-corpus \\
        -max_total_time=3600 -timeout=10 -rss_limit_mb=4096 -max_len=200000

Byte mutations rarely get past the checksums, which is what they are for. To fuzz
the decoder and the type handlers behind them, fuzz the manifest alone: with
``SP_FUZZ_MODE=manifest`` each input is taken as the manifest JSON and wrapped in a
valid file (fresh checksums, the buffers of the seed files), as an attacker would::

    SP_FUZZ_MODE=manifest python tests/adversarial/fuzz_reader.py --make-seeds /tmp/sp-manifests
    SP_FUZZ_MODE=manifest python tests/adversarial/fuzz_reader.py /tmp/sp-manifests \
        -max_total_time=3600 -timeout=10 -rss_limit_mb=4096 -dict=... (optional)

libFuzzer writes a reproducer (``crash-*``, ``timeout-*``, ``oom-*``) into the
current folder on a finding; replay one with::

    python tests/adversarial/fuzz_reader.py crash-<hash>

``-timeout`` turns hangs into findings and ``-rss_limit_mb`` turns unbounded
allocations (a missed size check) into findings. ``--make-seeds DIR`` writes the
seeds of ``fuzz_seeds.py`` (small dicts, models, a compressed file, a signed file,
the adversarial suite's rich object) as the starting corpus. The sentinel of
``fuzz_common.py`` makes any process, socket or stray write a finding too.
``tools/fuzz_campaign.py`` runs this and the other harnesses and tabulates them.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # spcraft, fuzz_*

import fuzz_common
import fuzz_seeds

MODE = os.environ.get("SP_FUZZ_MODE", "file")


def _wrapper() -> Callable[[bytes], bytes]:
    """input bytes -> a valid file holding them as its manifest (manifest mode)."""
    from spcraft import Crafted

    payloads: list[bytes] = []
    codecs: list[str] = []
    raw_lengths: list[int] = []
    for _, data in sorted(fuzz_seeds.reader_files().items()):
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


def make_seeds(folder: str) -> None:
    fuzz_seeds.make_seeds("manifest" if MODE == "manifest" else "reader", folder)


def main() -> None:
    state: dict[str, Any] = {}

    def target(data: bytes) -> None:
        import safepoint as sp

        if MODE == "manifest":
            if "wrap" not in state:  # built after the instrumented import of safepoint
                state["wrap"] = _wrapper()
            data = state["wrap"](data)
        for fn in (sp.loads, sp.inspect, sp.verify):
            try:
                fn(data)
            except sp.SafepointError:
                pass
        # signed files: with a key the digest and signature paths run too
        try:
            sp.loads(data, key=b"k" * 32)
        except sp.SafepointError:
            pass

    fuzz_common.run(make_seeds, target)


if __name__ == "__main__":
    main()
