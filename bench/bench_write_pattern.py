"""How safepoint's one-pass write cuts and orders its batches, in a fresh process.

``python -m bench.bench_write_pattern --model M2 --rounds 6`` runs, for each round and
each variant, a fresh worker that unpickles the cached model (fresh memory, as
``bench.run``'s cold saves), records the buffers safepoint's save hands to its
one-pass write (``_parallel_io.write_hashed_inline``: the parts and the file offset
each starts at), waits ``--settle`` seconds, then writes those same bytes into a new
file at the same offsets, in batches of the writer's size (``write_chunk()``):

* ``aligned, write then hash``: what the writer does: batches end at file offsets
  that are multiples of the batch size, each batch hashed (xxh3) after its write;
* ``aligned, hash then write``: each batch hashed before its write;
* ``unaligned, hash then write``: what the writer did before: a batch was cut once
  it held the batch size, wherever the previous buffer had ended, and hashed first;
* ``aligned, no hash``: the writes alone.

``--chunks 64,128,1024`` runs each variant in batches of each size (KiB) instead.

Printed: the median (min-max) time and system time of the writes of each variant,
interleaved round by round so that a slow moment of a shared machine hits all.
The encoding, the manifest and the rename are not timed: this isolates the write
pattern (docs/benchmarks.md, "Aligned batches").
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, cast

VARIANTS = {
    "aligned, write then hash": (True, "after"),
    "aligned, hash then write": (True, "before"),
    "unaligned, hash then write": (False, "before"),
    "aligned, no hash": (True, None),
}


def _record_parts(obj: Any) -> list[tuple[int, list[memoryview]]]:
    """The (file offset, parts) of every one-pass write of a save of ``obj``."""
    import io

    import safepoint as sp
    from safepoint.format import _parallel_io as pio

    calls: list[tuple[int, list[memoryview]]] = []
    real = pio.write_hashed_inline

    def recording(write: Any, parts: Sequence[memoryview], *args: Any, **kw: Any) -> None:
        # the writer passes the file offset of the first byte as start=
        calls.append((kw.get("start", 0), list(parts)))
        real(write, parts, *args, **kw)

    class Discard(io.RawIOBase):
        # no copy of the bytes: the parts stay the object's own memory
        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            return memoryview(b).nbytes

    pio.write_hashed_inline = recording
    try:
        sp.dump(obj, cast(BinaryIO, Discard()))
    finally:
        pio.write_hashed_inline = real
    return calls


def _batches(parts: Sequence[memoryview], start: int, step: int, aligned: bool) -> list[Any]:
    """The batches of ``parts`` (from file offset ``start``) in calls of ``step`` bytes:
    aligned, as the writer's own batching cuts them over a whole file; or unaligned,
    as it did before (a batch cut once it holds ``step`` bytes)."""
    out: list[Sequence[memoryview]] = []
    if aligned:
        from safepoint.format import _parallel_io as pio

        saved = pio.HASH_CHUNK, pio.ALIGNED_UPTO
        pio.HASH_CHUNK, pio.ALIGNED_UPTO = step, 1 << 62
        try:
            pio.write_hashed_inline(out.append, parts, (), start=start)
        finally:
            pio.HASH_CHUNK, pio.ALIGNED_UPTO = saved
        return out
    batch: list[memoryview] = []
    size = 0
    for part in parts:
        for lo in range(0, max(len(part), 1), step):
            piece = part[lo : lo + step]
            batch.append(piece)
            size += len(piece)
            if size >= step:
                out.append(batch)
                batch, size = [], 0
    if batch:
        out.append(batch)
    return out


def child(
    model: str,
    variant: str,
    settle: float,
    path: str,
    scale: float,
    cache_dir: str,
    chunk: int = 0,
) -> dict[str, Any]:
    """One fresh-process measurement of ``variant`` in batches of ``chunk`` bytes
    (0: the writer's own size) (run by :func:`main`)."""
    import xxhash

    from bench.models import cache_paths
    from bench.worker import MODEL_MODULES
    from safepoint.format._parallel_io import write_chunk

    for mod in MODEL_MODULES.get(model, ()):
        __import__(mod)
    with open(cache_paths(model, scale, Path(cache_dir))[0], "rb") as f:
        obj = pickle.load(f)
    aligned, hashing = VARIANTS[variant]
    step = chunk or write_chunk()
    plan = [(start, _batches(parts, start, step, aligned)) for start, parts in _record_parts(obj)]
    if os.path.exists(path):
        os.unlink(path)
    time.sleep(settle)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        ru0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for start, batches in plan:
            os.lseek(fd, start, os.SEEK_SET)
            h = xxhash.xxh3_64()
            for batch in batches:
                if hashing == "before":
                    for piece in batch:
                        h.update(piece)
                os.writev(fd, batch)
                if hashing == "after":
                    for piece in batch:
                        h.update(piece)
        seconds = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        os.close(fd)
        os.unlink(path)
    return {
        "s": seconds,
        "sys": ru1.ru_stime - ru0.ru_stime,
        "bytes": sum(len(p) for _, batches in plan for b in batches for p in b),
    }


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="M2", help="a model cached by bench.run (scale 1)")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument(
        "--cache-dir", default=None, help="bench.run's model cache (default: bench/.cache)"
    )
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument(
        "--variants", default=None, help="comma-separated numbers (1-4) of the variants to run"
    )
    ap.add_argument(
        "--chunks",
        default="0",
        help="comma-separated batch sizes in KiB to run each variant with (0: the writer's own)",
    )
    ap.add_argument("--settle", type=float, default=3.0, help="seconds each worker waits")
    ap.add_argument("--dir", default=None, help="where the file is written (default: cache)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--chunk", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    from bench.models import DEFAULT_CACHE, ensure

    cache_dir = args.cache_dir or str(DEFAULT_CACHE)
    path = os.path.join(args.dir or cache_dir, "write-pattern.tmp")
    if args.child:
        out = child(args.model, args.child, args.settle, path, args.scale, cache_dir, args.chunk)
        print(json.dumps(out))
        return
    ensure(args.model, args.scale, Path(cache_dir))
    names = list(VARIANTS)
    if args.variants:
        names = [names[int(i) - 1] for i in args.variants.split(",")]
    chunks = [int(k) for k in args.chunks.split(",")]
    runs = [(v, k) for v in names for k in chunks]

    def label(variant: str, kib: int) -> str:
        return variant if len(chunks) == 1 else f"{variant}, {kib or 'own'} KiB"

    got: dict[str, list[dict[str, Any]]] = {label(v, k): [] for v, k in runs}
    for r in range(args.rounds):
        for variant, kib in runs:
            cmd = [sys.executable, "-m", "bench.bench_write_pattern", "--model", args.model]
            cmd += ["--settle", str(args.settle), "--child", variant, "--scale", str(args.scale)]
            cmd += ["--cache-dir", cache_dir, "--chunk", str(kib * 1024)]
            if args.dir:
                cmd += ["--dir", args.dir]
            text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            got[label(variant, kib)].append(json.loads(text.strip().splitlines()[-1]))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    size = next(iter(got.values()))[0]["bytes"] / 2**20
    print(f"{args.model}: {size:.0f} MiB written, {args.rounds} rounds, settle {args.settle:g} s")
    print("| variant | time, median (min-max) | system time, median |")
    print("|---|---|---|")
    for variant, rows in got.items():
        s = sorted(x["s"] * 1e3 for x in rows)
        st = statistics.median(x["sys"] * 1e3 for x in rows)
        print(
            f"| {variant} | {statistics.median(s):.1f} ms ({s[0]:.1f}-{s[-1]:.1f}) | {st:.0f} ms |"
        )


if __name__ == "__main__":
    main()
