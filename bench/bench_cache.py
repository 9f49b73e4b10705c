"""Remote store read cache: first get, second get, get(mmap=True) vs s3fs's own get.

    python -m bench.bench_cache --mb 200 --repeat 5

A moto S3 server (a local process, ``moto_server``) holds a ``--mb`` MiB model (a dict
of float32 arrays) in a store with a read cache in a temporary folder. Each round,
interleaved, times:

* **first get**: ``store.get`` with the cache emptied (parallel ranged download into
  the cache, digest and checksum verification, rename, then the load from the file);
* **fill only**: the download + verification alone (``cache.ensure``), cache emptied;
* **second get**: ``store.get`` again (reads the cached file);
* **get(mmap=True)**: maps the cached file;
* **s3fs get**: ``fs.get(object, local_file)`` of the same object (s3fs's own parallel
  ranged download to a file; the reference for download throughput).

Prints a Markdown table of medians and the ratios the targets name (second get >= 5x
faster than first; first get's throughput >= 80% of s3fs get's), and ``--json`` writes
the raw numbers. The moto server runs on this machine: it shares the CPU with the
client, so figures on a loaded machine are noise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from safepoint.errors import SafepointError
from safepoint.testing.s3 import start_moto_server


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    try:
        return start_moto_server(timeout=60)
    except SafepointError as exc:
        raise SystemExit(str(exc)) from None


def _model(mb: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    n_arrays = 8
    per = max(1, mb * 2**20 // 4 // n_arrays)
    return {f"layer{i}": rng.random(per, dtype=np.float32) for i in range(n_arrays)}


def run(mb: int, repeat: int, folder: Path) -> dict[str, Any]:
    import s3fs

    import safepoint as sp
    from safepoint.stores.cache import BlobCache

    proc, endpoint = start_moto()
    try:
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
        opts = {
            "key": "bench",
            "secret": "bench",
            "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        }
        fs = s3fs.S3FileSystem(**opts, skip_instance_cache=True)
        bucket = "bench-" + uuid.uuid4().hex[:8]
        import boto3

        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
            region_name="us-east-1",
        ).create_bucket(Bucket=bucket)
        cache = BlobCache(folder / "cache", max_bytes="4G")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", sp.SafepointWarning)
            store = sp.Store(
                f"s3://{bucket}/m",
                metadata=f"sqlite:///{folder}/catalog.db",
                storage_options=opts,
                cache=cache,
            )
        mv = store.put("bench/model", _model(mb))
        del_obj = f"{bucket}/m/blobs/{mv.digest[:2]}/{mv.digest}.sp"
        times: dict[str, list[float]] = {
            k: [] for k in ("first", "fill", "second", "mmap", "s3fs_get")
        }
        for _ in range(repeat):
            cache.clear()
            t = time.perf_counter()
            obj = store.get("bench/model")
            times["first"].append(time.perf_counter() - t)
            del obj
            t = time.perf_counter()
            obj = store.get("bench/model")
            times["second"].append(time.perf_counter() - t)
            del obj
            t = time.perf_counter()
            obj = store.get("bench/model", mmap=True)
            times["mmap"].append(time.perf_counter() - t)
            del obj
            cache.clear()
            t = time.perf_counter()
            cache.ensure(store.blobs, mv.digest, mv.size)
            times["fill"].append(time.perf_counter() - t)
            local = folder / "s3fs-get.sp"
            t = time.perf_counter()
            fs.get(del_obj, str(local))
            times["s3fs_get"].append(time.perf_counter() - t)
            local.unlink()
        med = {k: statistics.median(v) for k, v in times.items()}
        return {
            "mb": mb,
            "bytes": mv.size,
            "repeat": repeat,
            "median_s": med,
            "all_s": times,
            "second_speedup": med["first"] / med["second"],
            "first_vs_s3fs_throughput": med["s3fs_get"] / med["first"],
            "fill_vs_s3fs_throughput": med["s3fs_get"] / med["fill"],
            "fills": cache.fills,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=200, help="model size in MiB")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dir", help="folder to work in (default: a temporary one)")
    ap.add_argument("--json", help="write the raw numbers to this file")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        res = run(args.mb, args.repeat, Path(d))
    m, mib = res["median_s"], res["bytes"] / 2**20
    print(f"model: {mib:.1f} MiB on a moto S3 server; medians of {res['repeat']} rounds")
    print()
    print("| measurement | median | throughput | target |")
    print("|---|---|---|---|")
    rows = [
        ("first `get` (download to cache + verify + load)", "first", ""),
        ("fill only (parallel ranged download + verify)", "fill", ""),
        ("s3fs `get` of the same object to a file", "s3fs_get", "(reference)"),
        ("second `get` (cached file)", "second", ""),
        ("`get(mmap=True)` (maps the cached file)", "mmap", ""),
    ]
    for label, key, target in rows:
        print(f"| {label} | {m[key]:.3f} s | {mib / m[key]:.0f} MiB/s | {target} |")
    print(f"| second get speed-up over first | {res['second_speedup']:.1f}x | | >= 5x |")
    print(
        f"| first get throughput / s3fs get | {res['first_vs_s3fs_throughput']:.2f} | | >= 0.80 |"
    )
    print(f"| fill throughput / s3fs get | {res['fill_vs_s3fs_throughput']:.2f} | | |")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
