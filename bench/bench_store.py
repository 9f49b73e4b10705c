"""Store benchmarks: checkpointer latency, and put vs sp.dump(durable=True).

    python -m bench.bench_store --mb 256 --repeat 7 --n 300

* checkpointer ``set`` of a small value, durable (fsynced SQLite commit), median over
  ``--n`` sets on the local store; ``get`` of the same, median (target: set <= 5 ms,
  get <= 1 ms);
* ``store.put`` of a large array-heavy model (a dict of float32 arrays, ``--mb`` MiB)
  vs ``sp.dump(model, path, durable=True)`` to a file in the same folder; runs
  alternate (distinct content each round, nothing deleted while timing), median of
  ``--repeat`` (target: put <= 1.1x dump). Both fsync the data and the folder; put
  also commits the catalog transaction. Needs 2 x repeat x mb of free disk.

Prints a Markdown table (and ``--json`` writes the raw numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _model(mb: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    n_arrays = 16
    per = mb * 2**20 // 4 // n_arrays
    return {f"layer{i}": rng.random(per, dtype=np.float32) for i in range(n_arrays)}


def bench_checkpointer(root: Path, n: int) -> dict[str, float]:
    """Interleaved with the raw floor: a bare SQLite WAL commit with synchronous=FULL and
    an in-place 4 KiB write + fdatasync (what one durable commit costs on this disk)."""
    import sqlite3

    import safepoint as sp

    ckpt = sp.Store(root / "ckpt-store").checkpointer("bench/offsets")
    raw = sqlite3.connect(root / "raw.db", isolation_level=None)
    raw.execute("PRAGMA journal_mode=WAL")
    raw.execute("PRAGMA synchronous=FULL")
    raw.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB)")
    fd = os.open(root / "raw.bin", os.O_RDWR | os.O_CREAT)
    os.write(fd, bytes(1 << 16))
    sets, gets, commits, syncs = [], [], [], []
    for i in range(n):
        value = {"offset": i, "file": "part-0001.parquet", "rows": 250 * i}
        t = time.perf_counter()
        ckpt.set("offset", value)
        sets.append(time.perf_counter() - t)
        t = time.perf_counter()
        got = ckpt.get("offset")
        gets.append(time.perf_counter() - t)
        assert got == value
        t = time.perf_counter()
        raw.execute("BEGIN IMMEDIATE")
        raw.execute("INSERT OR REPLACE INTO t VALUES ('offset', ?)", (os.urandom(200),))
        raw.execute("COMMIT")
        commits.append(time.perf_counter() - t)
        t = time.perf_counter()
        os.pwrite(fd, os.urandom(4096), 0)
        os.fdatasync(fd)
        syncs.append(time.perf_counter() - t)
    os.close(fd)
    raw.close()
    return {
        "raw_sqlite_commit_ms": 1e3 * statistics.median(commits),
        "raw_fdatasync_ms": 1e3 * statistics.median(syncs),
        "set_median_ms": 1e3 * statistics.median(sets),
        "set_p90_ms": 1e3 * statistics.quantiles(sets, n=10)[-1],
        "get_median_ms": 1e3 * statistics.median(gets),
        "get_p90_ms": 1e3 * statistics.quantiles(gets, n=10)[-1],
        "n": n,
    }


def bench_put(root: Path, mb: int, repeat: int) -> dict[str, Any]:
    import safepoint as sp

    model = _model(mb)
    store = sp.Store(root / "put-store")
    dumps, puts = [], []
    for i in range(repeat):
        # distinct content each round (no de-duplication), nothing deleted while timing:
        # freeing hundreds of MiB makes the next fsync pay for the journal
        model["layer0"][0] = i
        path = root / f"dump-{i}.sp"
        for which in ("dump", "put") if i % 2 == 0 else ("put", "dump"):
            t = time.perf_counter()
            if which == "dump":
                sp.dump(model, path, durable=True)
                dumps.append(time.perf_counter() - t)
            else:
                store.put("bench/model", model)
                puts.append(time.perf_counter() - t)
    d, p = statistics.median(dumps), statistics.median(puts)
    return {
        "mb": mb,
        "paired_ratio": statistics.median(b / a for a, b in zip(dumps, puts, strict=True)),
        "dump_durable_s": d,
        "put_s": p,
        "ratio": p / d,
        "dump_runs": dumps,
        "put_runs": puts,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=256, help="size of the put/dump model in MiB")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--n", type=int, default=300, help="checkpointer sets/gets")
    ap.add_argument("--dir", help="folder to work in (default: a temporary one)")
    ap.add_argument("--json", help="write the raw numbers to this file")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        ck = bench_checkpointer(root, args.n)
        put = bench_put(root, args.mb, args.repeat)
    print("| measurement | median | target |")
    print("|---|---|---|")
    print(
        f"| checkpointer `set` (small value, durable) | {ck['set_median_ms']:.2f} ms "
        f"(p90 {ck['set_p90_ms']:.2f}) | <= 5 ms |"
    )
    print(
        f"| checkpointer `get` | {ck['get_median_ms']:.2f} ms "
        f"(p90 {ck['get_p90_ms']:.2f}) | <= 1 ms |"
    )
    print(f"| raw floor: bare SQLite WAL commit, FULL | {ck['raw_sqlite_commit_ms']:.2f} ms | |")
    print(f"| raw floor: 4 KiB write + fdatasync | {ck['raw_fdatasync_ms']:.2f} ms | |")
    print(f"| `sp.dump(durable=True)`, {put['mb']} MiB | {put['dump_durable_s']:.3f} s | |")
    print(
        f"| `store.put`, {put['mb']} MiB | {put['put_s']:.3f} s "
        f"({put['ratio']:.2f}x dump; median of paired ratios {put['paired_ratio']:.2f}x) "
        "| <= 1.1x |"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"checkpointer": ck, "put": put}, indent=2))


if __name__ == "__main__":
    main()
