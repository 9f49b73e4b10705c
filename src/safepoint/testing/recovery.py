"""Compare a store's catalog before it was lost with the one ``recover`` rebuilt.

Used by the crash tests and by ``tools/store_faults.py``:

>>> import safepoint as sp, tempfile
>>> store = sp.Store(tempfile.mkdtemp())
>>> _ = store.put("a/m", {"x": 1}, alias="prod")
>>> before = snapshot(store)
>>> diff = compare(before, snapshot(store))
>>> (diff.lost, diff.changed, diff.extra, diff.alias_changes)
([], [], [], [])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..stores.store import Store

__all__ = ["RecoveryDiff", "compare", "snapshot"]


def snapshot(store: Store) -> dict[str, Any]:
    """``{"versions": {ref: fields}, "aliases": {name@alias: version}}`` of a catalog."""
    versions: dict[str, tuple[Any, ...]] = {}
    aliases: dict[str, int] = {}
    for name in store.models():
        for v in store.versions(name):
            versions[v.ref] = (
                v.digest,
                v.size,
                v.metadata,
                v.metrics,
                v.tags,
                v.parents,
                v.description,
                v.created_by,
                round(v.created.timestamp(), 3),
            )
        for alias, version in store.aliases(name).items():
            aliases[f"{name}@{alias}"] = version
    return {"versions": versions, "aliases": aliases}


@dataclass
class RecoveryDiff:
    """How a rebuilt catalog differs from the original."""

    #: versions the original had and the rebuilt one lacks
    lost: list[str] = field(default_factory=list)
    #: versions present in both with different fields
    changed: list[str] = field(default_factory=list)
    #: versions only the rebuilt catalog has (a put killed between its record and its
    #: commit, or a version whose deletion was not journaled before a kill)
    extra: list[str] = field(default_factory=list)
    #: aliases whose value differs (``name@alias: before -> after``)
    alias_changes: list[str] = field(default_factory=list)


def compare(before: dict[str, Any], after: dict[str, Any]) -> RecoveryDiff:
    diff = RecoveryDiff()
    for ref, fields in before["versions"].items():
        if ref not in after["versions"]:
            diff.lost.append(ref)
        elif after["versions"][ref] != fields:
            diff.changed.append(ref)
    diff.extra = sorted(set(after["versions"]) - set(before["versions"]))
    for key in sorted(set(before["aliases"]) | set(after["aliases"])):
        a, b = before["aliases"].get(key), after["aliases"].get(key)
        if a != b:
            diff.alias_changes.append(f"{key}: {a} -> {b}")
    return diff
