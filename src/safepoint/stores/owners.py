"""Who holds a lease or a gc mark, and whether that process is gone.

A holder is written as ``host|boot id|PID namespace|PID|start time`` (:func:`this_owner`).
A holder counts as dead (:func:`owner_dead`) only when this process can tell for sure:
same host name, same boot of the same kernel, same PID namespace, and the PID is no
longer running, is a zombie, or now belongs to a process that started at another time
(a reused PID). Holders on other machines, in other containers or from before a reboot
count as alive until their lease expires.

>>> owner = this_owner()
>>> owner_dead(owner)
False
>>> host, boot, ns, pid, start = owner.split("|")
>>> owner_dead("|".join([host, boot, ns, pid, str(int(start) + 1)]))  # same PID, not us
True
"""

from __future__ import annotations

import functools
import os
import socket

__all__ = ["owner_dead", "process_gone", "process_start", "this_owner"]


@functools.cache
def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


@functools.cache
def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:")
    except OSError:
        return ""


def host_name() -> str:
    return socket.gethostname()[:100].replace("|", "_")


def _stat_fields(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # the command name (field 2) may contain spaces and ")": split after the last ")"
            return f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_start(pid: int) -> str:
    """When process ``pid`` started, in clock ticks since boot ("" if unknown)."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return ""
    return fields[19].decode()  # field 22 of /proc/PID/stat; fields[0] is field 3


def _is_zombie(pid: int) -> bool:
    # a killed child that its parent has not reaped yet still answers kill(pid, 0)
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] == b"Z"  # type: ignore[index]


_OWNER: dict[int, str] = {}


def this_owner() -> str:
    """The holder id of this process (computed once per process; forks get their own)."""
    pid = os.getpid()
    owner = _OWNER.get(pid)
    if owner is None:
        owner = _OWNER[pid] = "|".join(
            [host_name(), _boot_id(), _pid_namespace(), str(pid), process_start(pid)]
        )
    return owner


def process_gone(host: str, pid: int) -> bool:
    """True if process ``pid`` of ``host`` is known to be gone: the host is this one and
    the PID does not run or is a zombie (killed, not reaped yet). The one liveness check
    of the store: leases, gc marks and runs (:mod:`safepoint.stores.runs`) all use it, so a
    zombie counts as dead everywhere."""
    return owner_dead("", host, pid)


def owner_dead(owner: str, host: str = "", pid: int = 0) -> bool:
    """True if the holder ``owner`` is known to be gone (see the module docstring).

    Rows written before holders were recorded in full have only ``host`` and ``pid``:
    those count as dead when the host is this one and the PID does not run.
    """
    parts = owner.split("|") if owner else []
    if len(parts) == 5:
        o_host, o_boot, o_ns, o_pid, o_start = parts
        try:
            pid = int(o_pid)
        except ValueError:
            return False
        if o_host != host_name() or not o_boot or o_boot != _boot_id():
            return False
        if not o_ns or o_ns != _pid_namespace():
            return False
    else:
        if host[:100].replace("|", "_") != host_name() or pid <= 0:
            return False
        o_start = ""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return bool(o_start) and o_start != process_start(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by another user
        pass
    if _is_zombie(pid):
        return True
    if o_start:
        now_start = process_start(pid)
        return bool(now_start) and now_start != o_start
    return False
