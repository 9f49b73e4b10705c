"""Coverage-guided fuzzing of safepoint's pickle interpreter and ``scan`` (atheris).

Not part of the test suite (no ``test_`` prefix; ``test_fuzz_harnesses.py`` runs
it for a few seconds). Each input is taken as a pickle stream and goes through
``sp.scan`` (sniffing, the parser of ``importers/pickle_parser.py``, the audit of
``importers/audit.py``, every pickle of a concatenated stream) and the JSON report of
``safepoint scan --json``; then through ``sp.convert`` when the scan found it
safe, to build what was audited. Property: it returns or raises a
``SafepointError``, within ``-timeout`` and ``-rss_limit_mb``, and nothing runs
(the sentinel of ``fuzz_common.py``).

Seeds: benign pickles at every protocol and the hostile payloads of
``tests/importers/convert_payloads.py`` (``fuzz_seeds.py``)::

    python tests/adversarial/fuzz_pickle.py --make-seeds /tmp/sp-pickles
    python tests/adversarial/fuzz_pickle.py /tmp/sp-pickles \\
        -max_total_time=3600 -timeout=10 -rss_limit_mb=4096 -max_len=65536

Replay a reproducer with ``python tests/adversarial/fuzz_pickle.py crash-<hash>``.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fuzz_common
import fuzz_seeds


def make_seeds(folder: str) -> None:
    fuzz_seeds.make_seeds("pickle", folder)


def main() -> None:
    def target(data: bytes) -> None:
        import safepoint as sp

        # the working folder of fuzz_common.run (the sentinel allows writes there only)
        src = os.path.abspath("input.pkl")
        with open(src, "wb") as f:
            f.write(data)
        results = sp.scan(src)
        json.dumps([r.to_dict() for r in results])  # the CLI's --json report
        if all(r.verdict == "safe" for r in results):
            sp.convert(src, os.path.abspath("out.sp"))

    fuzz_common.run(make_seeds, target)


if __name__ == "__main__":
    main()
