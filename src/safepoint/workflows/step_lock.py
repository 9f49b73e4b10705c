"""One run at a time per workflow version, through the store's runs table.

A workflow run is a row of the store's runs table (kind ``"steps"``, name
``{workflow}/v{version}``). Starting a run checks, in one write transaction of the
catalog, that no *live* run of the same workflow holds it, and inserts the new
row; so two processes that start at once never both run (SQLite serialises
writers with ``BEGIN IMMEDIATE``; on PostgreSQL the transaction row-locks a
catalog row named after the workflow first).

A run that is still ``running`` but whose process is gone (same host, pid not
alive) or whose heartbeat is older than ``stale_after`` seconds is taken over:
it is marked ``interrupted`` and the new run starts.

This belongs in :class:`safepoint.stores.runs.Runs` (``start(..., exclusive=True)``);
it lives here until the store offers it.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

from ..stores.catalog import dumps_json

__all__ = ["Holder", "pid_alive", "release", "try_start_exclusive"]

#: runs started by this process and not finished yet: another thread may be running one
_ACTIVE: set[str] = set()


@dataclass(frozen=True)
class Holder:
    """The live run that holds a workflow."""

    run_id: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float

    def describe(self) -> str:
        age = max(0.0, time.time() - self.heartbeat_at)
        return f"run {self.run_id} (pid {self.pid} on {self.host}, last heartbeat {age:.0f} s ago)"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def _alive(row: Any, host: str, stale_after: float, now: float) -> bool:
    if row.host == host:
        if int(row.pid) == os.getpid():
            # this process: alive if a thread of ours is running it; otherwise a run
            # that ended without recording it (its catalog was unreachable at the end)
            return str(row.id) in _ACTIVE
        if not pid_alive(int(row.pid)):
            return False
    return now - float(row.heartbeat_at) <= stale_after


def try_start_exclusive(
    store: Any,
    kind: str,
    name: str,
    state: dict[str, Any],
    *,
    stale_after: float,
    message: str = "",
) -> tuple[str | None, Holder | None, list[str]]:
    """Start a run unless a live one holds ``(kind, name)``.

    Returns ``(run_id, None, taken_over)`` on success, where ``taken_over`` lists
    the ids of dead runs marked ``interrupted``; ``(None, holder, [])`` when a
    live run holds the workflow.
    """
    cat = store.catalog
    now = time.time()
    run_id = uuid.uuid4().hex
    # marked active before the insert commits: a thread of ours that sees the row must
    # never take it for the leftover of a dead run
    _ACTIVE.add(run_id)
    try:
        return _start(store, cat, kind, name, state, run_id, stale_after, message, now)
    except BaseException:
        _ACTIVE.discard(run_id)
        raise


def _start(
    store: Any,
    cat: Any,
    kind: str,
    name: str,
    state: dict[str, Any],
    run_id: str,
    stale_after: float,
    message: str,
    now: float,
) -> tuple[str | None, Holder | None, list[str]]:
    holder_row, taken = cat.start_run_exclusive(
        {
            "id": run_id,
            "kind": kind,
            "name": name,
            "status": "running",
            "progress": 0.0,
            "message": message,
            "state": dumps_json(state),
            "started_at": now,
            "heartbeat_at": now,
            "finished_at": None,
            "host": store.host,
            "pid": os.getpid(),
            "user": store.actor,
        },
        alive=lambda r: _alive(r, store.host, stale_after, now),
        lock_by=store.actor,
        interrupted=lambda r: (
            f"the process (pid {r.pid} on {r.host}) died during the run; {r.message}"
        ),
    )
    if holder_row is not None:
        r = holder_row
        _ACTIVE.discard(run_id)
        return (
            None,
            Holder(r.id, r.host, int(r.pid), float(r.started_at), float(r.heartbeat_at)),
            [],
        )
    return run_id, None, taken


def release(run_id: str) -> None:
    """Forget a run of this process (it finished, whatever its status)."""
    _ACTIVE.discard(run_id)
