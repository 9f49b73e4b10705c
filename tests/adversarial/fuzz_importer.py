"""Coverage-guided fuzzing of the joblib and skops importers (atheris).

Not part of the test suite (no ``test_`` prefix; ``test_fuzz_harnesses.py`` runs
each mode for a few seconds). Each input is written as a file and goes through
``sp.convert`` (containers, decompression, zip members, the skops schema reader of
``importers/skops_.py``, construction, the write) and ``sp.scan``. Property: both
return or raise a ``SafepointError``, within ``-timeout`` and ``-rss_limit_mb``,
and nothing runs (the sentinel of ``fuzz_common.py``).

``SP_FUZZ_MODE`` picks the input:

* ``joblib`` (default): whole joblib files (plain, zlib, gzip, lzma) and a zip
  holding a pickle;
* ``skops``: whole ``.skops`` archives;
* ``skops-schema``: the archive's ``schema.json`` alone, zipped back with the
  ``.npy`` members of every seed archive, so that mutations reach the schema reader
  instead of the zip's CRC checks.

::

    SP_FUZZ_MODE=skops python tests/adversarial/fuzz_importer.py --make-seeds /tmp/sp-skops
    SP_FUZZ_MODE=skops python tests/adversarial/fuzz_importer.py /tmp/sp-skops \\
        -max_total_time=3600 -timeout=10 -rss_limit_mb=4096 -max_len=100000
"""

from __future__ import annotations

import io
import os
import sys
import zipfile
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fuzz_common
import fuzz_seeds

MODE = os.environ.get("SP_FUZZ_MODE", "joblib")
if MODE not in ("joblib", "skops", "skops-schema"):
    sys.exit(f"SP_FUZZ_MODE={MODE!r}: expected joblib, skops or skops-schema")


def make_seeds(folder: str) -> None:
    fuzz_seeds.make_seeds(MODE, folder)


def _schema_wrapper() -> Callable[[bytes], bytes]:
    members: dict[str, bytes] = {}
    for data in fuzz_seeds.skops_files().values():
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            for name in z.namelist():
                if name != "schema.json":
                    members.setdefault(name, z.read(name))

    def wrap(schema: bytes) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("schema.json", schema)
            for name, raw in members.items():
                z.writestr(name, raw)
        return buf.getvalue()

    return wrap


def main() -> None:
    wrap = _schema_wrapper() if MODE == "skops-schema" else None
    suffix = ".joblib" if MODE == "joblib" else ".skops"

    def target(data: bytes) -> None:
        import safepoint as sp

        if wrap is not None:
            data = wrap(data)
        src = os.path.abspath("input" + suffix)
        with open(src, "wb") as f:
            f.write(data)
        try:
            sp.convert(src, os.path.abspath("out.sp"))
        finally:
            # scan examines what convert refuses too (every member, every problem)
            sp.scan(src)

    fuzz_common.run(make_seeds, target)


if __name__ == "__main__":
    main()
