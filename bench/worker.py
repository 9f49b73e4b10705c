"""One measurement, run in a fresh process: ``python -m bench.worker '<json spec>'``.

The spec names an operation (save, save_durable, load, inspect, raw_read, raw_write,
raw_write_new, raw_write_chunked, raw_write_fsync), a library (see :mod:`bench.libs`),
the cached model and the file to write or read. The worker imports everything the
operation needs first, so that neither time nor memory counts imports; then it resets
the kernel's peak-RSS counter, runs the operation once, and prints one JSON line:
seconds, extra peak RSS and retained RSS beyond the state before the operation, the file
size, the kernel's counts for the operation (system and user CPU time, minor and major
page faults, from ``getrusage``; memory this VM handed back to its host meanwhile), and
(for loads with ``check``) whether the loaded object computes the same fingerprint as
the model that was saved.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import pickle
import resource
import sys
import time
from typing import Any

#: modules a model's objects come from, imported before any timing by every library
MODEL_MODULES: dict[str, tuple[str, ...]] = {
    "M1": ("sklearn.neighbors",),
    "M2": ("sklearn.ensemble", "sklearn.tree"),
    "M3": ("sklearn.pipeline", "sklearn.feature_extraction.text", "sklearn.linear_model"),
    "M4": ("sklearn.ensemble",),
    "M5": (),
    "M6": ("pandas", "pyarrow"),
}


def _status() -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of this process, in bytes."""
    out: dict[str, int] = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) * 1024
    return out


def _reset_peak() -> bool:
    """Reset the peak-RSS counter (Linux: writing 5 to clear_refs); False if impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


#: KiB of free memory this VM's guest has handed back to the host so far (a counter of
#: this kernel's page reporting; absent elsewhere)
_REPORTED = "/sys/module/page_reporting/parameters/reported_kib"


def _reported_kib() -> int | None:
    try:
        with open(_REPORTED) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


class Meter:
    """Time, memory and kernel counts of one operation, relative to the state just before it."""

    #: False in --inprocess mode, where collecting a large shared heap dominates the run
    collect = True

    def __enter__(self) -> Meter:
        if self.collect:
            gc.collect()
        self.peak_reset = _reset_peak()
        self.before = _status()
        self.rep0 = _reported_kib()
        self.ru0 = resource.getrusage(resource.RUSAGE_SELF)
        self.c0 = time.process_time()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
        # CPU time of all threads: robust to a machine shared with other jobs
        self.cpu = time.process_time() - self.c0
        ru0, ru1 = self.ru0, resource.getrusage(resource.RUSAGE_SELF)
        rep1 = _reported_kib()
        # counts that do not depend on how busy the machine is (unlike seconds)
        self.counts = {
            "sys": round(ru1.ru_stime - ru0.ru_stime, 4),
            "user": round(ru1.ru_utime - ru0.ru_utime, 4),
            "minflt": ru1.ru_minflt - ru0.ru_minflt,
            "majflt": ru1.ru_majflt - ru0.ru_majflt,
            "reported_mib": None if rep1 is None or self.rep0 is None else (rep1 - self.rep0) >> 10,
        }
        after = _status()
        base = self.before["VmRSS"]
        self.extra_peak = after["VmHWM"] - base if self.peak_reset else None
        self.retained = after["VmRSS"] - base


def _preload(model: str, lib_imports: tuple[str, ...]) -> None:
    import numpy  # noqa: F401

    for mod in (*MODEL_MODULES.get(model, ()), *lib_imports):
        importlib.import_module(mod)
    if "safepoint" in lib_imports:
        # lazily imported by the format on first use; not part of a load
        importlib.import_module("zstandard")
        importlib.import_module("safepoint.format.sklearn.trust_table")


def _meminfo_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


#: this VM's free page reporting (a Firecracker guest kernel): freed memory is
#: handed back to the host once more than this many MiB of it wait to be reported
_MAX_WAITING = "/sys/module/page_reporting/parameters/max_waiting_mib"


def _report_threshold() -> int:
    """Bytes that may be freed without the guest handing them back at once."""
    try:
        with open(_MAX_WAITING) as f:
            return int(int(f.read().strip()) * 0.9) << 20
    except (OSError, ValueError):
        return 1 << 62


def prefault(spec: dict[str, Any]) -> None:
    """Touch and free about twice the operation's data in fresh memory, just before it.

        On a VM whose guest hands free memory back to the host (Firecracker's free page
        reporting: a block free for ~2 s is returned), the first touch of a returned
        page costs a host fault. An operation that allocates a gigabyte (a load's
        arrays, a save's page cache) then takes 0.25 s or 2.5 s depending on how long
        ago its pages were freed, for every library alike. Memory freed here is not yet
        returned when the operation takes it, so the timings compare the libraries, not
        the hypervisor. Only ``bench.run --prefault`` does this (the second table,
    which isolates the library from the VM); the default cold mode waits instead
    (:func:`settle`). Freeing more than the
        guest lets wait (``max_waiting_mib``, 1 GiB here) would have it handed back
        at once: the amount stays under that, so a gigabyte model gets most of its
        memory warm, not all of it.
    """
    import mmap

    import numpy as np

    size = max(
        (
            os.path.getsize(p)
            for p in (spec.get("cache"), spec.get("path"), spec.get("source"))
            if p and os.path.exists(p)
        ),
        default=0,
    )
    n = min(2 * size + (256 << 20), _meminfo_available() // 2, _report_threshold())
    n -= n % mmap.PAGESIZE
    if n <= 0:
        return
    m = mmap.mmap(-1, n)
    np.frombuffer(m, dtype=np.uint8)[:: mmap.PAGESIZE] = 1
    m.close()


def settle(spec: dict[str, Any]) -> None:
    """Wait ``spec["settle"]`` seconds before a cold operation.

    The guest hands memory freed by the previous worker (its objects, the file the
    save replaces) back to the host about two seconds after it was freed. A worker
    that reached its timed operation sooner (fewer imports) would find that memory
    still backed and look faster than one that got there later: waiting the same
    time in every worker gives every library the same state, the one a training
    script's single save meets (memory freed long ago, handed back).
    """
    wait = float(spec.get("settle") or 0)
    if wait > 0:
        time.sleep(wait)


def _prepare(spec: dict[str, Any]) -> None:
    """Prefault or settle, whichever the mode asks for, just before the timed operation."""
    if spec.get("prefault"):
        prefault(spec)
    else:
        settle(spec)


def _load_cached(path: str) -> Any:
    with open(path, "rb") as f:
        return pickle.load(f)


def _write_all(fd: int, data: memoryview) -> None:
    while len(data):
        n = os.write(fd, data)
        data = data[n:]


def _chunk() -> int:
    """The write size safepoint's own writer uses on this machine."""
    from safepoint.format._parallel_io import write_chunk

    return write_chunk()


def _write_chunked(fd: int, data: memoryview, chunk: int) -> None:
    """The same bytes in calls of ``chunk`` bytes: the pattern of safepoint's writer,
    which on a VM that hands free memory back to its host can be several times faster
    than one call (docs/benchmarks.md, "Write size ...")."""
    for start in range(0, len(data), chunk):
        _write_all(fd, data[start : start + chunk])


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement described by ``spec``; returns the result record."""
    from .libs import LIBS

    op = spec["op"]
    path = spec["path"]
    result: dict[str, Any] = {"op": op, "lib": spec.get("lib")}
    if op in ("raw_read", "raw_write", "raw_write_new", "raw_write_chunked", "raw_write_fsync"):
        import numpy as np

        size = os.path.getsize(spec["source"])
        if op == "raw_read":
            _prepare(spec)
            # ordinary pages, as pickle's buffers (numpy would advise huge pages,
            # several times slower to fault in on the benchmark machine)
            setter = np._core.multiarray._set_madvise_hugepage  # type: ignore[attr-defined]
            previous = setter(False)
            buf = np.empty(size, dtype=np.uint8)
            setter(previous)
            with Meter() as m, open(spec["source"], "rb", buffering=0) as f:
                mv = memoryview(buf.data)
                got = 0
                while got < size:
                    got += f.readinto(mv[got:]) or 0
        else:
            # read straight into the one buffer that is then written, as unpickling
            # reads an array's bytes straight into the array: a temporary copy freed
            # just before the write would hand the write's page cache memory in
            # another state than the libraries' saves meet
            data = memoryview(bytearray(size))
            with open(spec["source"], "rb", buffering=0) as f:
                got = 0
                while got < size:
                    got += f.readinto(data[got:]) or 0
            if os.path.exists(path):
                os.unlink(path)
            _prepare(spec)
            # looked up before the timing: it imports safepoint
            chunk = (spec.get("chunk") or _chunk()) if op == "raw_write_chunked" else 0
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                if op == "raw_write":
                    os.posix_fallocate(fd, 0, size)
                with Meter() as m:
                    if op == "raw_write_chunked":
                        _write_chunked(fd, data, chunk)
                    else:
                        _write_all(fd, data)
                    if op == "raw_write_fsync":
                        os.fsync(fd)
            finally:
                os.close(fd)
            os.unlink(path)
        result.update(s=m.seconds, cpu=m.cpu, size=size, peak=m.extra_peak, **m.counts)
        return result

    lib = LIBS[spec["lib"]]
    _preload(spec["model"], lib.imports)
    if op in ("save", "save_durable"):
        obj = _load_cached(spec["cache"])
        if os.path.exists(path):
            os.unlink(path)
        _prepare(spec)
        with Meter() as m:
            lib.save(obj, path, op == "save_durable")
        result.update(
            s=m.seconds, cpu=m.cpu, size=os.path.getsize(path), peak=m.extra_peak, **m.counts
        )
        return result
    if op == "inspect":
        with Meter() as m:
            lib.inspect(path)
        result.update(s=m.seconds)
        return result
    if op == "load":
        prep = lib.prepare(path) if lib.prepare else None
        _prepare(spec)
        with Meter() as m:
            obj = lib.load(path, prep)
        result.update(
            s=m.seconds,
            cpu=m.cpu,
            size=os.path.getsize(path),
            peak=m.extra_peak,
            retained=m.retained,
            **m.counts,
        )
        if spec.get("check"):
            from .models import fingerprint

            check_input = _load_cached(spec["check_path"])
            result["ok"] = fingerprint(obj, check_input) == spec["fingerprint"]
        return result
    raise ValueError(f"unknown op {op!r}")


def main() -> None:
    spec = json.loads(sys.argv[1])
    try:
        out = measure(spec)
    except Exception as exc:
        out = {
            "op": spec.get("op"),
            "lib": spec.get("lib"),
            "error": f"{type(exc).__name__}: {exc}",
        }
    sys.stdout.write("\n" + json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
