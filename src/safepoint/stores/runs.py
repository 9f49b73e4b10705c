"""The runs table: what workflows, searches and scoring jobs are doing, for the CLI and console.

>>> import safepoint as sp, tempfile
>>> store = sp.Store(tempfile.mkdtemp())
>>> run = store.runs.start("search", "fraud/grid", state={"candidates": 12})
>>> run.update(progress=0.5, state={"done": 6})      # state is merged into the old one
>>> run.heartbeat()
>>> run.finish()
>>> info = store.runs.get(run.id)
>>> (info.kind, info.status, info.progress, info.state)
('search', 'succeeded', 1.0, {'candidates': 12, 'done': 6})
>>> [r.id for r in store.runs.list(kind="search")] == [run.id]
True

API:

* ``store.runs.start(kind, name, state=None, *, run_id=None, exclusive=False,
  stale_after=STALE_AFTER) -> Run``: status ``running``. ``kind`` is a short word
  (``"steps"``, ``"search"``, ``"scoring"``); ``name`` what runs. ``exclusive=True``: one
  live run per ``(kind, name)``; starting checks and inserts in one write transaction,
  so two processes that start at once never both run. A ``running`` row whose process is
  gone (this host, PID not running or a zombie: :func:`~safepoint.stores.owners.process_gone`)
  or whose heartbeat is older than ``stale_after`` seconds is taken over (marked
  ``interrupted``; ``Run.taken_over`` lists them); a live one raises
  :class:`~safepoint.errors.RunBusyError` (``.holder``: its ``RunInfo``).
* ``store.runs.attach(run_id) -> Run``: continue a run from another process (resume).
* ``Run.update(*, progress=None, state=None, status=None, message=None, replace_state=False)``:
  ``progress`` in [0, 1]; ``state`` a JSON-like dict merged into the stored one (or replacing
  it); every update is a heartbeat. ``Run.heartbeat()``; ``with run.keepalive(interval):``
  beats every ``interval`` seconds from a daemon thread while the block computes;
  ``Run.release()`` (this process no longer runs it, whatever its row says);
  ``Run.finish(status="succeeded",
  message="")``, ``Run.fail(message)``; ``with store.runs.start(...) as run:`` finishes the
  run as ``succeeded``, or ``failed`` with the exception.
* ``store.runs.get(run_id) -> RunInfo``; ``store.runs.list(kind=None, name=None,
  status=None, limit=100) -> list[RunInfo]`` (newest first); ``store.runs.delete(run_id)``.
* ``RunInfo.stale``: ``running`` but no heartbeat for ``STALE_AFTER`` seconds (the process
  probably died: a resumable workflow can pick it up); ``RunInfo.alive``: ``running``, not
  stale, and its process not seen gone.

Statuses: ``running``, ``succeeded``, ``failed``, ``interrupted``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..errors import (
    InvalidArgumentError,
    InvalidNameError,
    NotFoundError,
    RunBusyError,
    SerializationError,
    StoreError,
)
from .catalog import dumps_json, loads_json
from .owners import process_gone

if TYPE_CHECKING:
    from .store import Store

__all__ = ["STALE_AFTER", "STATUSES", "Run", "RunInfo", "Runs"]

STATUSES = ("running", "succeeded", "failed", "interrupted")
#: seconds without a heartbeat after which a running run is reported stale
STALE_AFTER = 300.0
_KIND = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
#: exclusive runs that this process started and still runs: another thread of ours may be
#: running one, so its row (with our PID) is never the leftover of a dead process
_ACTIVE: set[str] = set()


def _dt(t: float | None) -> datetime | None:
    from datetime import UTC

    return None if t is None else datetime.fromtimestamp(t, tz=UTC)


@dataclass
class RunInfo:
    """A row of the runs table."""

    id: str
    kind: str
    name: str
    status: str
    progress: float | None
    message: str
    state: dict[str, Any]
    started: datetime
    heartbeat: datetime
    finished: datetime | None
    host: str
    pid: int
    user: str
    stale: bool = field(default=False)

    @property
    def alive(self) -> bool:
        """``running``, with a recent heartbeat, and its process not seen gone."""
        return self.status == "running" and not self.stale and not process_gone(self.host, self.pid)

    def describe(self) -> str:
        """``run <id> (pid <pid> on <host>, last heartbeat <n> s ago)``."""
        age = max(0.0, time.time() - self.heartbeat.timestamp())
        return f"run {self.id} (pid {self.pid} on {self.host}, last heartbeat {age:.0f} s ago)"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("started", "heartbeat", "finished"):
            d[k] = d[k].isoformat() if d[k] is not None else None
        return d


def _state(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise SerializationError("run state must be a dict with str keys (JSON-like values)")
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"run state must be JSON-serializable: {exc}") from None
    return dict(value)


class Run:
    """A handle to write one run's row (see the module docstring)."""

    def __init__(self, runs: Runs, run_id: str) -> None:
        self.runs = runs
        self.id = run_id
        #: ids of dead runs that an exclusive start marked ``interrupted``
        self.taken_over: list[str] = []

    def __repr__(self) -> str:
        return f"Run({self.id!r})"

    def update(
        self,
        *,
        progress: float | None = None,
        state: dict[str, Any] | None = None,
        status: str | None = None,
        message: str | None = None,
        replace_state: bool = False,
    ) -> None:
        """Record progress/state/status (each call is also a heartbeat)."""
        values: dict[str, Any] = {"heartbeat_at": time.time()}
        if progress is not None:
            try:
                p = float(progress)
            except (TypeError, ValueError, OverflowError):
                raise InvalidArgumentError(
                    f"progress must be a number in [0, 1], not {progress!r}"
                ) from None
            if math.isnan(p) or not 0.0 <= p <= 1.0:
                raise StoreError(f"progress must be in [0, 1], not {progress!r}")
            values["progress"] = p
        if status is not None:
            if status not in STATUSES:
                raise StoreError(f"status must be one of {STATUSES}, not {status!r}")
            values["status"] = status
            values["finished_at"] = None if status == "running" else time.time()
        if message is not None:
            values["message"] = str(message)
        new_state = _state(state) if state is not None else None
        cat = self.runs.store.catalog
        # a heartbeat or progress tick need not survive a power loss; a status or state does
        durable = status is not None or new_state is not None or message is not None
        with cat.tx(write=True, durable=durable) as conn:
            if new_state is not None:
                if not replace_state:
                    old = cat.run_state_for_update(conn, self.id)
                    new_state = {**loads_json(old, {}), **new_state}
                values["state"] = dumps_json(new_state)
            if not cat.update_run(conn, self.id, **values):
                raise NotFoundError(f"no run {self.id!r} (was it deleted?)")

    def heartbeat(self) -> None:
        """Say the run is alive."""
        self.update()

    @contextlib.contextmanager
    def keepalive(self, interval: float = 10.0) -> Iterator[Run]:
        """Beat every ``interval`` seconds from a daemon thread while the block runs (a
        long computation that reports nothing must not look dead to other processes)."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(interval):
                with contextlib.suppress(Exception):  # a missed beat only ages the run
                    self.heartbeat()

        thread = threading.Thread(target=loop, name="safepoint-heartbeat", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join(timeout=5)

    def release(self) -> None:
        """This process no longer runs it (an exclusive run whose end could not be
        recorded is then taken over by the next start, even from this process)."""
        _ACTIVE.discard(self.id)

    def finish(self, status: str = "succeeded", message: str = "") -> None:
        """End the run (``succeeded`` sets progress to 1)."""
        self.update(status=status, message=message, progress=1.0 if status == "succeeded" else None)

    def fail(self, message: str) -> None:
        self.finish("failed", message)

    def info(self) -> RunInfo:
        return self.runs.get(self.id)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: Any) -> None:
        if et is None:
            self.finish()
        elif issubclass(et, KeyboardInterrupt):
            self.finish("interrupted", "KeyboardInterrupt")
        else:
            self.fail(f"{et.__name__}: {ev}")


class Runs:
    """The runs table of a store (``store.runs``)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def start(
        self,
        kind: str,
        name: str,
        state: dict[str, Any] | None = None,
        *,
        run_id: str | None = None,
        message: str = "",
        exclusive: bool = False,
        stale_after: float = STALE_AFTER,
    ) -> Run:
        """Insert a ``running`` run and return its handle (``exclusive``: see the module
        docstring)."""
        if not isinstance(kind, str) or not _KIND.fullmatch(kind):
            raise InvalidNameError(
                f"run kind must be a short lowercase word like 'search', not {kind!r}"
            )
        if not isinstance(name, str) or not name or len(name) > 200 or "\x00" in name:
            raise InvalidNameError("run name must be a non-empty str of at most 200 characters")
        rid = run_id or uuid.uuid4().hex
        if not isinstance(rid, str) or not _ID.fullmatch(rid):
            raise InvalidNameError(f"run_id must be 1-32 letters, digits, '_' or '-', not {rid!r}")
        now = time.time()
        self.store.require_writable()
        if exclusive:
            return self._start_exclusive(
                kind, name, rid, _state(state), str(message), now, float(stale_after)
            )
        with self.store.catalog.tx(write=True) as conn:
            if self.store.catalog.run_exists(conn, rid):
                raise StoreError(
                    f"run {rid!r} exists already; use store.runs.attach({rid!r}) to continue it"
                )
            self.store.catalog.insert_run(
                conn,
                id=rid,
                kind=kind,
                name=name,
                status="running",
                progress=0.0,
                message=str(message),
                state=dumps_json(_state(state)),
                started_at=now,
                heartbeat_at=now,
                finished_at=None,
                host=self.store.host,
                pid=os.getpid(),
                user=self.store.actor,
            )
        return Run(self, rid)

    def _start_exclusive(
        self,
        kind: str,
        name: str,
        rid: str,
        state: dict[str, Any],
        message: str,
        now: float,
        stale_after: float,
    ) -> Run:
        store = self.store
        here = store.host

        def alive(row: Any) -> bool:
            if row.host == here and int(row.pid) == os.getpid():
                # this process: alive if a thread of ours runs it; otherwise a run that
                # ended without recording it (its catalog was unreachable at the end)
                return str(row.id) in _ACTIVE
            if process_gone(row.host, int(row.pid)):
                return False
            return now - float(row.heartbeat_at) <= stale_after

        # marked active before the insert commits: a thread of ours that sees the row
        # must never take it for the leftover of a dead run
        _ACTIVE.add(rid)
        try:
            holder, taken = store.catalog.start_run_exclusive(
                {
                    "id": rid,
                    "kind": kind,
                    "name": name,
                    "status": "running",
                    "progress": 0.0,
                    "message": message,
                    "state": dumps_json(state),
                    "started_at": now,
                    "heartbeat_at": now,
                    "finished_at": None,
                    "host": here,
                    "pid": os.getpid(),
                    "user": store.actor,
                },
                alive=alive,
                lock_by=store.actor,
                interrupted=lambda r: (
                    f"the process (pid {r.pid} on {r.host}) died during the run; {r.message}"
                ),
            )
        except BaseException:
            _ACTIVE.discard(rid)
            raise
        if holder is not None:
            _ACTIVE.discard(rid)
            info = self._info(holder)
            raise RunBusyError(f"{kind} {name!r} is being run by {info.describe()}", info)
        run = Run(self, rid)
        run.taken_over = taken
        return run

    def attach(self, run_id: str) -> Run:
        """A handle on an existing run (for example to resume it in a new process)."""
        info = self.get(run_id)
        return Run(self, info.id)

    def _info(self, r: Any) -> RunInfo:
        hb = float(r.heartbeat_at)
        return RunInfo(
            id=r.id,
            kind=r.kind,
            name=r.name,
            status=r.status,
            progress=r.progress,
            message=r.message,
            state=loads_json(r.state, {}),
            started=_dt(r.started_at),  # type: ignore[arg-type]
            heartbeat=_dt(hb),  # type: ignore[arg-type]
            finished=_dt(r.finished_at),
            host=r.host,
            pid=int(r.pid),
            user=r.user,
            stale=r.status == "running" and time.time() - hb > STALE_AFTER,
        )

    def get(self, run_id: str) -> RunInfo:
        """One run by id."""
        from .names import check_run_id

        check_run_id(run_id, "run id")
        with self.store.catalog.tx() as conn:
            r = self.store.catalog.run_row(conn, run_id)
        if r is None:
            raise NotFoundError(f"no run {run_id!r}; `store.runs.list()` shows the runs")
        return self._info(r)

    def list(
        self,
        kind: str | None = None,
        name: str | None = None,
        status: str | None = None,
        limit: int = 100,
    ) -> list[RunInfo]:
        """Runs, newest first, filtered by kind, name and status."""
        from .arguments import count_arg

        limit = count_arg(limit, "limit", 1, 10**7)
        if name is not None and not isinstance(name, str):
            raise InvalidArgumentError(f"name must be a str, not {type(name).__name__}")
        if status is not None and status not in STATUSES:
            raise InvalidArgumentError(
                f"status must be one of {', '.join(STATUSES)}, not {status!r}"
            )
        if kind is not None and (not isinstance(kind, str) or not _KIND.fullmatch(kind)):
            raise InvalidArgumentError(
                f"kind must be a short lowercase word like 'search', not {kind!r}"
            )
        with self.store.catalog.tx() as conn:
            rows = self.store.catalog.run_rows(
                conn, kind=kind, name=name, status=status, limit=limit
            )
        return [self._info(r) for r in rows]

    def delete(self, run_id: str) -> bool:
        """Remove a run's row; True if it existed."""
        from .names import check_run_id

        check_run_id(run_id, "run id")
        with self.store.catalog.tx(write=True) as conn:
            return self.store.catalog.delete_run(conn, run_id)
