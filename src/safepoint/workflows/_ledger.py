"""The ledger of a resumable search: one entry per (candidate, fold), kept in a checkpointer.

Layout inside the checkpointer (any object with ``get/set/keys/delete``, e.g.
``sp.Store(path).checkpointer(name)``):

``search/meta``
    what the search is: its digest and the digests of its parts (estimator, grid,
    scoring, data, splits), its size, the seed used to sample candidates.
``search/<digest16>/<candidate32>/<fold>``
    the result of one fit exactly as scikit-learn's ``_fit_and_score`` returned it
    (scores, times, n_test_samples, the error text of a failed fit).

Each entry is one ``set``, which the checkpointer commits atomically: a kill at any
instant leaves every finished fit recorded and no partial entry visible. Entry keys
carry the search digest, so results of another search can never be mistaken for
this one's, even if a restart was interrupted half-way through deleting them.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

from ..errors import CheckpointMismatchError, SafepointError

__all__ = ["Checkpointer", "Ledger"]

LEDGER_FORMAT = "safepoint.search-ledger/1"
META_KEY = "search/meta"
_PREFIX = "search/"

#: Parts of a search, in the order a mismatch report names them.
PART_LABELS = {
    "kind": "the search class",
    "estimator": "the estimator",
    "grid": "the parameter grid / distributions",
    "scoring": "the scoring",
    "options": "return_train_score / error_score",
    "data": "the data (X, y or fit parameters)",
    "splits": "the cross-validation splits",
}


@runtime_checkable
class Checkpointer(Protocol):
    """What the ledger needs from a checkpoint: a small key/value interface.

    Values are plain Python objects (dicts of floats and strings); the checkpointer
    serialises them with the safepoint format, never with pickle.
    """

    def get(self, key: str, default: Any = None) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...

    def keys(self) -> Iterable[str]: ...

    def delete(self, key: str) -> Any: ...


def entry_key(digest: str, candidate: str, fold: int) -> str:
    return f"{_PREFIX}{digest[:16]}/{candidate}/{fold}"


class Ledger:
    """Results of one search in a checkpointer; see the module docstring for the layout."""

    def __init__(self, checkpointer: Checkpointer, where: str) -> None:
        self.cp = checkpointer
        self.where = where
        self.digest = ""
        self.meta: dict[str, Any] = {}

    # -- opening --------------------------------------------------------------------
    def open(
        self,
        digest: str,
        parts: dict[str, str],
        on_mismatch: str,
        info: dict[str, Any],
        hint: str = "",
    ) -> dict[str, Any]:
        """Bind the ledger to the search ``digest``; returns the stored (or new) meta.

        A ledger written by a different search raises CheckpointMismatchError
        (``on_mismatch="error"``) or is emptied (``"restart"``).
        """
        old = self.cp.get(META_KEY)
        if old is not None and not (
            isinstance(old, dict) and old.get("format") == LEDGER_FORMAT and "digest" in old
        ):
            raise CheckpointMismatchError(
                f"the checkpoint {self.where} holds a key {META_KEY!r} that is not a search "
                "ledger (another workflow wrote it?). Use a checkpoint of its own for the "
                "search, e.g. store.checkpointer('project/my-search')."
            )
        if old is not None and old["digest"] != digest:
            changed = [
                PART_LABELS.get(name, name)
                for name in PART_LABELS
                if old.get("parts", {}).get(name) != parts.get(name)
            ]
            n_old = sum(1 for _ in self._entry_keys(old["digest"]))
            if on_mismatch == "error":
                raise CheckpointMismatchError(
                    f"the checkpoint {self.where} belongs to a different search "
                    f"({n_old} fit result(s) recorded on {old.get('created', '?')}); changed: "
                    f"{', '.join(changed) or 'unknown'}. None of its results were reused. "
                    "Pass on_mismatch='restart' to discard them and start afresh, or give "
                    f"this search another checkpoint.{hint}"
                )
            self.clear(old["digest"])
            old = None
        self.digest = digest
        if old is None:
            meta = {
                "format": LEDGER_FORMAT,
                "digest": digest,
                "parts": dict(parts),
                "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                **info,
            }
            self.cp.set(META_KEY, meta)
            old = meta
        self.meta = old
        return old

    def clear(self, digest: str | None = None) -> int:
        """Delete the entries of the search ``digest`` (default: every search) and the meta."""
        n = 0
        for key in list(self._entry_keys(digest)):
            self.cp.delete(key)
            n += 1
        try:
            self.cp.delete(META_KEY)
        except (KeyError, LookupError):
            pass
        return n

    def _entry_keys(self, digest: str | None) -> Iterable[str]:
        prefix = _PREFIX if digest is None else f"{_PREFIX}{digest[:16]}/"
        stored = self.cp.keys()  # a checkpointer, not a dict: keys() is its API
        for key in stored:
            if key.startswith(prefix) and key != META_KEY:
                yield key

    # -- entries --------------------------------------------------------------------
    def results(self) -> dict[tuple[str, int], dict[str, Any]]:
        """Every recorded fit of this search, keyed by (candidate digest, fold)."""
        found: dict[tuple[str, int], dict[str, Any]] = {}
        for key in self._entry_keys(self.digest):
            _, _, candidate, fold = key.split("/", 3)
            try:
                value = self.cp.get(key)
            except SafepointError:
                # An unreadable entry costs one refit, never the whole search.
                continue
            if isinstance(value, dict) and "test_scores" in value and fold.isdigit():
                found[(candidate, int(fold))] = value
        return found

    def record(self, candidate: str, fold: int, result: dict[str, Any]) -> None:
        """Commit the result of one fit (one atomic ``set``)."""
        self.cp.set(entry_key(self.digest, candidate, fold), result)

    def update_meta(self, **fields: Any) -> None:
        self.meta = {**self.meta, **fields}
        self.cp.set(META_KEY, self.meta)
