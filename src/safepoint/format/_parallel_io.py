"""I/O of large buffers: threaded reads that hash as they go, writes overlapped with hashing.

Reading a large buffer from the page cache into fresh memory is dominated by the
page faults of the destination; ``os.preadv`` from a few threads takes those
faults on several cores at once. The checksum (and the BLAKE2b digest) is fed
chunk by chunk, in order, while later chunks are still being read, so there is
no second pass over memory. A streaming xxh3-64 over the chunks gives the same
digest as the one-shot hash of the whole buffer: the file format is unchanged.

Writes hash as they go too, in the calling thread: each chunk is written, then
hashed while the kernel's copy into the page cache has left it in the CPU's cache
(one pass over memory). A worker that hashed the whole
buffer while this thread wrote it made both read it from memory: on the
2-vCPU VM of bench/, a 1 GiB save in a fresh process took 1.5-2.0 s of system
time that way and 0.5-1.1 s in one pass (pickle: 1.7-1.9 s), 3 of 3 runs.

``SAFEPOINT_IO_THREADS`` sets the number of reader threads (``1``: no threads).
"""

from __future__ import annotations

import functools
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from ..errors import FormatError

__all__ = [
    "CHUNK",
    "HASH_CHUNK",
    "PARALLEL_FROM",
    "executor",
    "io_threads",
    "pread_into",
    "write_hashed_inline",
]

#: buffers at least this large take the paths of this module (tests lower it)
PARALLEL_FROM = 16 << 20
#: the largest request of one read
CHUNK = 8 << 20
#: requests are at least this large (unless the buffer is smaller)
_MIN_CHUNK = 1 << 20
_PAGE = 4096
#: where the kernel says whether it hands free memory back to its hypervisor
#: (virtio-balloon's free page reporting: cloud and micro VMs)
PAGE_REPORTING = "/sys/module/page_reporting/parameters/reported_kib"


def write_chunk(reporting: str = PAGE_REPORTING) -> int:
    """Bytes the one-pass write writes, then hashes, at a time.

    Small enough to be still in the CPU's cache when they are hashed. Where
    the kernel hands free memory back to a hypervisor, 64 KiB, else 1 MiB: on such
    a VM the page cache of a write of 256 KiB or more per call is memory the host
    must fault in again, and the first save in a fresh process took 4-5x the
    system time with 1 MiB writes (the 100 MB forest M2: 0.21-0.24 s against
    0.04-0.05 s with 64 KiB and 0.12-0.18 s for pickle, 5 of 5 interleaved runs;
    the 1 GiB M5: 1.07-2.46 s against 1.02-1.29 s, pickle 1.81-2.56 s); where the
    freed memory stays with the guest (a save soon after another), 64 KiB writes
    cost more calls (256 MiB in 0.096 s against 0.060 s). docs/benchmarks.md,
    "Write size on a VM that returns memory to its host".
    """
    return 64 << 10 if os.path.exists(reporting) else 1 << 20


#: bytes written, then hashed, at a time by the one-pass write (see write_chunk)
HASH_CHUNK = write_chunk()


def aligned_upto(reporting: str = PAGE_REPORTING) -> int:
    """How far into a file the one-pass write ends its batches at aligned offsets.

    Aligned batches let the page cache take whole folios, which costs the kernel less
    per byte while the memory it takes is backed by the host: a forest's 96 MiB went
    out in 26-27 ms of system time aligned against 31-33 ms cut wherever the previous
    array ended (M2, fresh process). On a VM that hands free memory back to its host,
    whole 64 KiB folios come from the large free blocks that were handed back, and past
    the first hundred MiB or so the host's faults outweigh that: a 1 GiB save (M5,
    64 arrays of 16 MiB) took 2.20-2.25 s aligned against 1.72-1.79 s unaligned
    (medians of 8 interleaved fresh-process rounds, twice; bench/bench_write_pattern.py,
    docs/benchmarks.md "Aligned batches"). There, the first 128 MiB of a file are
    written aligned and the rest in batches of the write size from each buffer's
    start; elsewhere all of it is aligned.
    """
    return 128 << 20 if os.path.exists(reporting) else 1 << 62


#: file offset up to which the one-pass write aligns its batches (see aligned_upto)
ALIGNED_UPTO = aligned_upto()

HAVE_PREADV = hasattr(os, "preadv")

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def io_threads() -> int:
    """Reader threads: ``SAFEPOINT_IO_THREADS``, else ``min(4, usable CPUs)``."""
    env = os.environ.get("SAFEPOINT_IO_THREADS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            pass
    return max(1, min(4, _cpus()))


@functools.cache
def _cpus() -> int:
    """CPUs this process may run on (``taskset`` and cgroup cpusets count, not the
    machine's), read once per process, not once per save."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def executor(n: int) -> ThreadPoolExecutor:
    """A shared pool of at least ``n`` threads (tasks given to it never wait on it)."""
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < n:
            # a smaller pool is dropped, not shut down: a thread may still be using it
            # (its idle workers exit once it is collected)
            _pool = ThreadPoolExecutor(n, thread_name_prefix="safepoint-io")
            _pool_size = n
        return _pool


def _forget_pool() -> None:  # pragma: no cover - runs in forked children
    global _pool, _pool_size, _lock
    # the pool's threads do not exist in a forked child
    _pool, _pool_size, _lock = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _drain(pending: Sequence[Future[Any]]) -> None:
    """Let running tasks finish: none may touch memory or a descriptor once we return."""
    for fut in pending:
        fut.cancel()
    wait(pending)


def chunk_size(n: int, threads: int) -> int:
    """Requests of at most CHUNK bytes, page multiples, enough of them to keep every thread busy."""
    per = -(-n // max(threads, 1))
    per = -(-per // _PAGE) * _PAGE
    return max(min(CHUNK, per), min(_MIN_CHUNK, n))


def pread_into(fd: int, offset: int, mv: memoryview, hashers: Sequence[Any], threads: int) -> None:
    """Fill ``mv`` with the file's bytes from ``offset`` on, hashing each chunk in order.

    With ``threads > 1`` the reads run on the shared pool and the calling thread
    hashes; a file that ends early raises :class:`FormatError`.
    """
    n = len(mv)
    step = chunk_size(n, threads)

    def read(lo: int, hi: int) -> None:
        pos = lo
        while pos < hi:
            k = os.preadv(fd, [mv[pos:hi]], offset + pos)
            if k <= 0:
                raise FormatError(f"the file ended early: wanted {n} bytes at offset {offset}")
            pos += k

    def consume(lo: int, hi: int) -> None:
        part = mv[lo:hi]
        for h in hashers:
            h.update(part)

    if threads <= 1:
        for lo in range(0, n, step):
            hi = min(lo + step, n)
            read(lo, hi)
            consume(lo, hi)
        return
    pool = executor(threads)
    window = 2 * threads
    pending: deque[tuple[int, int, Future[None]]] = deque()
    try:
        for lo in range(0, n, step):
            hi = min(lo + step, n)
            pending.append((lo, hi, pool.submit(read, lo, hi)))
            if len(pending) >= window:
                a, b, fut = pending.popleft()
                fut.result()
                consume(a, b)
        while pending:
            a, b, fut = pending.popleft()
            fut.result()
            consume(a, b)
    finally:
        if pending:
            _drain([fut for _, _, fut in pending])


def write_hashed_inline(
    write: Callable[[Sequence[memoryview]], None],
    parts: Sequence[memoryview],
    hashers: Sequence[Any],
    background: Sequence[Any] = (),
    threads: int = 1,
    start: int = 0,
) -> None:
    """``parts`` (end to end, in order) written and hashed in one pass, in this thread.

    The bytes go out in batches that end where the file's offset is a multiple of
    :data:`HASH_CHUNK` (``start``: the offset of the first byte; from
    :data:`ALIGNED_UPTO` on, batches of HASH_CHUNK from the first byte), and each batch is
    hashed right after ``write`` returns, while the kernel's copy has left it in the
    CPU's cache: a large buffer is read from memory once, not once for its hash and
    again for the copy. Aligned batches let the page cache take whole folios: a
    forest's 600 arrays written in batches that began wherever the previous array
    ended took 31-33 ms of system time against 26-27 ms aligned (M2, 96 MiB, fresh
    process, 6 interleaved runs each); hashing after the write rather than before
    saved another 2-3 ms (docs/benchmarks.md). The write stays on the calling
    thread: on a VM that returns free memory to its host, page-cache pages
    allocated from a worker thread took host faults that the calling thread's did
    not (M2's save: 33 ms or 160-240 ms). Small parts are gathered into one batch,
    so a column of many arrays still goes out in few calls. The hashers see the
    same bytes in the same order as a one-shot hash of the whole.

    ``background`` hashers are slow ones (BLAKE2b of a signed file, ~1 GB/s, four
    times slower than the write): with ``threads > 1`` a worker feeds them the
    parts meanwhile, so that a signed save is not the sum of both; otherwise they
    go with the others, batch by batch.
    """
    fut: Future[None] | None = None
    if background and threads > 1:

        def hash_all() -> None:
            for part in parts:
                for h in background:
                    h.update(part)

        fut = executor(1).submit(hash_all)
    else:
        hashers = (*hashers, *background)
    step = HASH_CHUNK
    batch: list[memoryview] = []
    # bytes the current batch may still take before the next aligned offset
    room = step - start % step if start < ALIGNED_UPTO else step
    try:
        for part in parts:
            n = len(part)
            lo = 0
            while lo < n:
                k = n - lo if n - lo < room else room
                batch.append(part if k == n else part[lo : lo + k])
                lo += k
                room -= k
                if not room:
                    write(batch)
                    for h in hashers:
                        for piece in batch:
                            h.update(piece)
                    batch, room = [], step
        if batch:
            write(batch)
            for h in hashers:
                for piece in batch:
                    h.update(piece)
    except BaseException:
        if fut is not None:
            # the worker reads the parts until it is done: never raise before that
            _drain([fut])
        raise
    if fut is not None:
        fut.result()
