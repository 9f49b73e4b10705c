"""What the load-time guard costs: code outside a load, and loads themselves.

    PYTHONPATH=src:. python -m bench.bench_guard [--repeat 7]

The guard is an audit hook (``sys.addaudithook``) installed by the first load and
never removed; outside a load it returns after reading a context variable. This
measures, each in a fresh process, interleaved, median of ``--repeat`` runs:

* events outside a load: 200,000 ``open``/``close`` of a file (two audit events
  each) and 50,000 ``os.listdir`` calls, with the hook installed (one load made
  before) and without (no safepoint load in the process);
* loads: what a guard adds to each load: entering and leaving the guard (a
  context variable set and reset), timed alone, against a whole ``sp.loads`` of
  a small model (the events inside a load are few: reads, no imports once the
  model's modules are loaded).

Prints seconds and ratios; results go in docs/benchmarks.md.

``--instructions`` counts CPU instructions instead (``valgrind --tool=callgrind``),
which a loaded machine does not disturb: each measure runs N and 11N times in a fresh
process under callgrind and the difference divided by 10N is the cost of one
operation, start-up and imports cancelled out. Kernel time is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import json, os, sys, tempfile, time
    import numpy as np
    import safepoint as sp
    from sklearn.linear_model import LogisticRegression
    X = np.random.RandomState(0).normal(size=(200, 5)); y = (X[:, 0] > 0).astype(int)
    data = sp.dumps(LogisticRegression().fit(X, y))
    if sys.argv[1] == "hook":
        sp.loads(data)  # installs the audit hook (once per process)
    path = tempfile.mkstemp()[1]
    t = time.perf_counter()
    for _ in range(200_000):
        open(path, "rb").close()
    t_open = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(50_000):
        os.listdir("/")
    t_list = time.perf_counter() - t
    from safepoint.format.guard import guarded
    t = time.perf_counter()
    for _ in range(20_000):
        with guarded("a load"):
            pass
    t_guard = (time.perf_counter() - t) / 20_000
    t = time.perf_counter()
    for _ in range(300):
        sp.loads(data)
    t_load = (time.perf_counter() - t) / 300
    os.unlink(path)
    print(json.dumps({"open": t_open, "listdir": t_list, "guard": t_guard, "load": t_load}))
    """
)


COUNT_CHILD = textwrap.dedent(
    """
    import os, sys, tempfile
    mode, op, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    import safepoint as sp
    data = sp.dumps({"w": list(range(10))})
    if mode == "hook":
        sp.loads(data)  # installs the audit hook (once per process)
    if op == "open":
        path = tempfile.mkstemp()[1]
        for _ in range(n):
            open(path, "rb").close()
        os.unlink(path)
    elif op == "listdir":
        for _ in range(n):
            os.listdir("/")
    elif op == "guard":
        from safepoint.format.guard import guarded
        for _ in range(n):
            with guarded("a load"):
                pass
    elif op == "load":
        for _ in range(n):
            sp.loads(data)
    """
)


def instructions(mode: str, op: str, n: int) -> int:
    """Instructions of one ``op`` (see ``--instructions`` above)."""
    counts = []
    for k in (n, 11 * n):
        proc = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--callgrind-out-file=/dev/null",
                sys.executable,
                "-c",
                COUNT_CHILD,
                mode,
                op,
                str(k),
            ],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        line = next(x for x in proc.stderr.splitlines() if "Collected :" in x)
        counts.append(int(line.rsplit(":", 1)[1]))
    return (counts[1] - counts[0]) // (10 * n)


def count_main() -> None:
    print(f"{'instructions per operation':<34}{'no hook':>12}{'hook':>12}{'ratio':>8}")
    for op, n, label in (
        ("open", 2_000, "open+close (outside a load)"),
        ("listdir", 1_000, "os.listdir (outside a load)"),
    ):
        a, b = instructions("none", op, n), instructions("hook", op, n)
        print(f"{label:<34}{a:>12,}{b:>12,}{b / a:>8.3f}")
    guard = instructions("hook", "guard", 2_000)
    load = instructions("hook", "load", 200)
    print(
        f"guard enter+exit {guard:,} instructions; sp.loads of a small dict {load:,} "
        f"({100 * guard / load:.1f}% of it)"
    )


def run(mode: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions under callgrind"
    )
    args = parser.parse_args()
    if args.instructions:
        count_main()
        return
    results: dict[str, list[dict[str, float]]] = {"none": [], "hook": []}
    for _ in range(args.repeat):
        for mode in ("none", "hook"):  # interleaved
            results[mode].append(run(mode))
    print(f"{'measure':<34}{'no hook':>12}{'hook':>12}{'ratio':>8}")
    for key, label in (
        ("open", "200k open+close (outside a load)"),
        ("listdir", "50k os.listdir (outside a load)"),
    ):
        a = statistics.median(r[key] for r in results["none"])
        b = statistics.median(r[key] for r in results["hook"])
        print(f"{label:<34}{a:>10.3f} s{b:>10.3f} s{b / a:>8.3f}")
    guard = statistics.median(r["guard"] for r in results["hook"]) * 1e6
    load = statistics.median(r["load"] for r in results["hook"]) * 1e6
    print(
        f"guard enter+exit {guard:.2f} us; sp.loads of a 2 kB model {load:.1f} us "
        f"({100 * guard / load:.1f}% of it)"
    )


if __name__ == "__main__":
    main()
