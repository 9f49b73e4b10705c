"""What every atheris harness (``fuzz_*.py``) shares: setup, the property, the sentinel.

Not part of the test suite (no ``test_`` prefix). The property of every harness:
for any input, the function under test returns or raises a ``SafepointError``
subclass. Any other exception is a finding (atheris prints it and libFuzzer writes
the input as ``crash-*``); so are a hang (``-timeout``), an allocation past
``-rss_limit_mb`` (``oom-*``) and a crash of the interpreter.

And nothing may run: the load guard (``safepoint.format.guard``) refuses
processes, sockets and writes inside every guarded path. The sentinel is a second
audit hook, added *after* the guard's: audit hooks run in the order they were
added, and a hook that raises stops the event, so the sentinel sees only events
the guard let through. Seeing a process, a socket or a write outside the
harness's own folder there means code from the input ran: it raises
:class:`CodeRan` (a ``BaseException``, so that a payload's ``except Exception``
cannot swallow it) and the harness fails on the input even if something caught it.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

#: events that mean the input's code runs, whatever caught the guard's error
_DANGER = (
    "os.system",
    "os.exec",
    "os.spawn",
    "os.posix_spawn",
    "os.fork",
    "os.forkpty",
    "os.kill",
    "subprocess.Popen",
    "pty.spawn",
    "socket.connect",
    "socket.bind",
    "socket.sendto",
    "socket.getaddrinfo",
    "ctypes.dlopen",
    "ctypes.call_function",
)


class CodeRan(BaseException):
    """Code of the input ran: the guard let through an event a load never needs."""


class _Sentinel:
    def __init__(self, allowed_dir: str) -> None:
        self.active = False
        self.allowed_dir = os.path.realpath(allowed_dir)
        self.seen: list[str] = []

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.active:
            return
        bad = event.startswith(_DANGER)
        if event == "open" and len(args) >= 2 and isinstance(args[0], str | bytes):
            mode = args[1] if isinstance(args[1], str) else ""
            flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
            writes = any(c in mode for c in "wax+") or bool(
                flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            )
            path = os.fsdecode(args[0])
            inside = os.path.realpath(path).startswith(self.allowed_dir + os.sep)
            bad = writes and not inside
        if bad:
            self.seen.append(f"{event}{args!r}"[:300])
            raise CodeRan(f"the input ran code: audit event {event} {args!r}"[:300])


def instrumented() -> Any:
    """``atheris`` after importing safepoint with coverage instrumentation.

    Only safepoint is instrumented: numpy, scikit-learn and zipfile would slow every
    execution many times over for little coverage that matters here.
    """
    import atheris

    # one binding ("safepoint") for all: ruff sees the last import only as unused
    with atheris.instrument_imports(include=["safepoint"]):
        import safepoint
        import safepoint.format.api
        import safepoint.format.guard
        import safepoint.importers.api
        import safepoint.importers.construct
        import safepoint.importers.skops_  # noqa: F401
    return atheris


def warm_imports() -> None:
    """Import what loads import lazily: a first import takes seconds, read as a hang."""
    import importlib

    for name in (
        "pandas",
        "scipy.sparse",
        "zstandard",
        "sklearn.tree",
        "sklearn.neighbors",
        "sklearn.linear_model",
        "sklearn.pipeline",
        "sklearn.preprocessing",
    ):
        importlib.import_module(name)


def seed_inputs(argv: Iterable[str], limit: int = 40) -> list[bytes]:
    out = []
    for folder in [a for a in argv if not a.startswith("-") and os.path.isdir(a)]:
        for entry in sorted(os.listdir(folder))[:limit]:
            with open(os.path.join(folder, entry), "rb") as f:
                out.append(f.read())
    return out


class _Counter:
    """Executions counted by the harness, written every few seconds to
    ``DIR/execs-<pid>.json``: libFuzzer prints its count only at powers of two and on
    new coverage, and not at all when the campaign stops it by a signal."""

    def __init__(self, folder: str | None) -> None:
        self.folder = folder
        self.n = 0
        self.counting = False
        self.last = 0.0

    def start(self) -> None:
        import time

        self.counting = True
        self.last = time.monotonic()

    def tick(self) -> None:
        if not self.counting:
            return  # the seeds' warm-up runs are not executions of the fuzzer
        self.n += 1
        if self.folder and self.n % 64 == 0:
            import time

            now = time.monotonic()
            if now - self.last >= 5:
                self.last = now
                os.makedirs(self.folder, exist_ok=True)
                path = os.path.join(self.folder, f"execs-{os.getpid()}.json")
                with open(path + ".tmp", "w") as f:
                    f.write(f'{{"executions": {self.n}}}')
                os.replace(path + ".tmp", path)


class _Findings:
    """Findings recorded by the harness itself, so that fuzzing goes on after one.

    With ``SP_FUZZ_FINDINGS=DIR`` (set by ``tools/fuzz_campaign.py``), an input that
    raises anything but a ``SafepointError`` is written to ``DIR/crash-<sha1>`` with
    its traceback in ``DIR/crash-<sha1>.txt``, once per distinct bug (the exception's
    type and the innermost frame of safepoint's code), and the input counts as done:
    libFuzzer would stop at the first one, and a restart costs a minute of imports on
    a loaded machine. Every occurrence is counted in ``DIR/findings.json``. Without
    the variable the exception propagates and libFuzzer reports it (replay, smoke).
    """

    def __init__(self, folder: str | None) -> None:
        self.folder = folder
        self.seen: dict[str, dict[str, Any]] = {}

    def record(self, data: bytes, exc: BaseException) -> bool:
        if not self.folder:
            return False
        import hashlib
        import json
        import traceback

        tb = traceback.extract_tb(exc.__traceback__)
        ours = [f for f in tb if os.sep + "safepoint" + os.sep in f.filename] or tb[-1:]
        where = f"{ours[-1].filename.rsplit(os.sep, 1)[-1]}:{ours[-1].lineno}" if ours else "?"
        key = f"{type(exc).__name__} at {where}"
        entry = self.seen.get(key)
        if entry is None:
            name = "crash-" + hashlib.sha1(data).hexdigest()
            os.makedirs(self.folder, exist_ok=True)
            with open(os.path.join(self.folder, name), "wb") as f:
                f.write(data)
            with open(os.path.join(self.folder, name + ".txt"), "w") as f:
                f.write("".join(traceback.format_exception(exc)))
            entry = self.seen[key] = {
                "key": key,
                "error": f"{type(exc).__name__}: {exc}"[:300],
                "reproducer": os.path.join(self.folder, name),
                "count": 0,
            }
            print(f"FINDING {key}: {entry['error']}", file=sys.stderr, flush=True)
        entry["count"] += 1
        if entry["count"] == 1 or entry["count"] % 100 == 0:
            path = os.path.join(self.folder, f"findings-{os.getpid()}.json")
            with open(path, "w") as f:
                json.dump(list(self.seen.values()), f, indent=1)
        return True


def run(
    make_seeds: Callable[[str], object],
    target: Callable[[bytes], None],
    *,
    work_dir: str | None = None,
) -> None:
    """The main of a harness: ``--make-seeds DIR``, or fuzz ``target`` with atheris.

    ``target`` gets each input and must return or raise a ``SafepointError``; the
    sentinel is active around it.
    """
    if len(sys.argv) == 3 and sys.argv[1] == "--make-seeds":
        make_seeds(sys.argv[2])
        return
    atheris = instrumented()
    from safepoint.errors import SafepointError
    from safepoint.format import guard

    warm_imports()
    # the guard's hook is installed on the first guarded operation: install it now so
    # that the sentinel, added next, runs after it
    guard._install()
    wd = work_dir or os.environ.get("SP_FUZZ_WORKDIR") or tempfile.mkdtemp(prefix="sp-fuzz-")
    os.makedirs(wd, exist_ok=True)
    sentinel = _Sentinel(wd)
    sys.addaudithook(sentinel.hook)
    # a payload that touches "canary" would do it here, inside the allowed folder: the
    # sentinel still sees the process or the socket that would do it
    os.chdir(wd)

    findings = _Findings(os.environ.get("SP_FUZZ_FINDINGS"))

    counter = _Counter(os.environ.get("SP_FUZZ_FINDINGS"))

    def one_input(data: bytes) -> None:
        counter.tick()
        sentinel.active = True
        try:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    try:
                        target(data)
                    except SafepointError:
                        pass
            finally:
                sentinel.active = False
            if sentinel.seen:
                raise CodeRan("; ".join(sentinel.seen))
        except BaseException as exc:
            sentinel.seen.clear()
            if isinstance(exc, KeyboardInterrupt) or not findings.record(data, exc):
                raise

    # the seeds once before fuzzing: their lazy imports are not timed as a hang
    for data in seed_inputs(sys.argv[1:]):
        try:
            one_input(data)
        except BaseException as exc:  # libFuzzer reports it again, with a reproducer
            print(f"seed finding: {type(exc).__name__}: {exc}"[:500], file=sys.stderr)
    counter.start()
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
