"""Runs.start(exclusive=True): one live run per (kind, name), dead holders taken over, the
one liveness check (zombies are dead), and Run.keepalive."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import safepoint as sp
from safepoint.errors import RunBusyError
from safepoint.stores.owners import process_gone


def _dead_pid() -> int:
    """The PID of a process that ran on this machine and has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_live_run_holds_its_name(tmp_path: Path) -> None:
    store = sp.Store(str(tmp_path / "s"))
    first = store.runs.start("steps", "flow/v1", {"a": 1}, exclusive=True)
    with pytest.raises(RunBusyError, match="is being run by run ") as busy:
        store.runs.start("steps", "flow/v1", exclusive=True)
    assert busy.value.holder.id == first.id
    # another name, or a run that is not exclusive, is not held
    store.runs.start("steps", "flow/v2", exclusive=True).finish()
    store.runs.start("steps", "flow/v1").finish()
    first.finish()
    first.release()
    again = store.runs.start("steps", "flow/v1", exclusive=True)
    assert again.taken_over == []
    assert store.runs.get(again.id).state == {}


def test_the_run_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    store = sp.Store(str(tmp_path / "s"))
    old = store.runs.start("steps", "flow/v1", exclusive=True)
    with store.catalog.tx(write=True) as conn:
        store.catalog.update_run(conn, old.id, pid=_dead_pid())
    new = store.runs.start("steps", "flow/v1", exclusive=True)
    assert new.taken_over == [old.id]
    info = store.runs.get(old.id)
    assert info.status == "interrupted" and "died during the run" in info.message
    assert not info.alive and store.runs.get(new.id).alive


def test_a_released_run_of_this_process_is_taken_over(tmp_path: Path) -> None:
    # its end could not be recorded (say the catalog was unreachable): the row stays
    # "running" with this PID, and the next start here must not wait for itself
    store = sp.Store(str(tmp_path / "s"))
    old = store.runs.start("steps", "flow/v1", exclusive=True)
    old.release()
    assert store.runs.start("steps", "flow/v1", exclusive=True).taken_over == [old.id]


def test_a_stale_heartbeat_is_taken_over(tmp_path: Path) -> None:
    store = sp.Store(str(tmp_path / "s"))
    old = store.runs.start("steps", "flow/v1", exclusive=True)
    with store.catalog.tx(write=True) as conn:
        # another machine: its PID cannot be checked here, only its heartbeat
        store.catalog.update_run(conn, old.id, host="elsewhere", heartbeat_at=time.time() - 99)
    with pytest.raises(RunBusyError):
        store.runs.start("steps", "flow/v1", exclusive=True, stale_after=3600)
    new = store.runs.start("steps", "flow/v1", exclusive=True, stale_after=10)
    assert new.taken_over == [old.id]


def test_a_zombie_is_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        # exited but not reaped: kill(pid, 0) still succeeds
        deadline = time.monotonic() + 60
        while not process_gone(socket.gethostname(), child.pid):
            assert time.monotonic() < deadline, "the child never exited"
            time.sleep(0.05)
        assert os.path.exists(f"/proc/{child.pid}")  # still there, as a zombie
    finally:
        child.wait()
    assert process_gone(socket.gethostname(), child.pid)
    assert not process_gone(socket.gethostname(), os.getpid())
    assert not process_gone("another-host", child.pid)  # cannot tell: alive


def test_keepalive_beats(tmp_path: Path) -> None:
    store = sp.Store(str(tmp_path / "s"))
    run = store.runs.start("search", "grid")
    with store.catalog.tx(write=True) as conn:
        store.catalog.update_run(conn, run.id, heartbeat_at=1000.0)
    with run.keepalive(0.05):
        deadline = time.monotonic() + 60
        while store.runs.get(run.id).heartbeat.timestamp() == 1000.0:
            assert time.monotonic() < deadline, "no heartbeat"
            time.sleep(0.05)
    run.finish()
