"""The ledger of a resumable search: one entry per (candidate, fold), kept in a checkpointer.

Layout inside the checkpointer (any object with ``get/set/keys/delete``, e.g.
``sp.Store(path).checkpointer(name)``):

``search/meta``
    what the search is: its digest and the digests of its parts (estimator, grid,
    scoring, data, splits), its size, the seed used to sample candidates, its run id.
``search/<digest16>/<writer>-<seq>``
    a commit of one or more fit results: ``{"fits": [{"c": candidate digest, "f": fold,
    "r": result}, ...]}``, each result exactly as scikit-learn's ``_fit_and_score``
    returned it (scores, times, n_test_samples, the error text of a failed fit).

Results are committed by a background thread (:class:`LedgerWriter`) as they arrive:
one atomic ``set`` per commit. A fit that finishes when the previous commit started at
least ``min_interval`` ago (0.2 s in a search) is committed at once; quicker ones are
grouped with what else finishes within that interval (group commit), so that a stream
of fast fits costs at most five commits a second. A kill at any instant leaves every
committed fit recorded and no partial entry visible; it loses the fits in flight:
running in a worker, or finished within the last commit interval.

Entry keys carry the search digest, so results of another search can never be
mistaken for this one's, even if a restart was interrupted half-way through
deleting them.
"""

from __future__ import annotations

import datetime as _dt
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

from ..errors import CheckpointMismatchError, SafepointError

__all__ = ["Checkpointer", "Ledger", "LedgerWriter", "recorded_fits"]

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
            try:
                value = self.cp.get(key)
            except SafepointError:
                # An unreadable commit costs its refits, never the whole search.
                continue
            fits = value.get("fits") if isinstance(value, dict) else None
            for item in fits if isinstance(fits, list) else ():
                if not isinstance(item, dict):
                    continue
                cand, fold, result = item.get("c"), item.get("f"), item.get("r")
                if (
                    isinstance(cand, str)
                    and isinstance(fold, int)
                    and isinstance(result, dict)
                    and "test_scores" in result
                ):
                    found[(cand, fold)] = result
        return found

    def commit(self, key: str, fits: list[tuple[str, int, dict[str, Any]]]) -> None:
        """Commit fit results ``(candidate digest, fold, result)`` in one atomic ``set``."""
        value = {"fits": [{"c": c, "f": int(f), "r": r} for c, f, r in fits]}
        self.cp.set(f"{_PREFIX}{self.digest[:16]}/{key}", value)

    def update_meta(self, **fields: Any) -> None:
        self.meta = {**self.meta, **fields}
        self.cp.set(META_KEY, self.meta)


class LedgerWriter:
    """Commits fit results to a ledger from a background thread, grouping what queues up.

    A result is committed as soon as it arrives if the previous commit started at least
    ``min_interval`` seconds ago; otherwise it waits for the rest of that interval with
    whatever else arrives (group commit). So fits slower than ``min_interval`` (the ones
    worth resuming) are each committed the moment they finish, while a stream of quick
    fits costs at most ``1 / min_interval`` commits per second, however fast it flows.

    ``put`` returns at once (unless ``max_pending`` results already wait: then it waits,
    so memory stays bounded); ``close`` commits everything put so far without waiting for
    the interval. An error in a commit (a full disk, a lost database) is raised again by
    the next ``put`` or by ``close``: a search never goes on believing its results are
    safe when they are not.
    """

    def __init__(
        self,
        ledger: Ledger,
        max_pending: int = 1024,
        after_commit: Callable[[int], None] | None = None,
        min_interval: float = 0.0,
        on_start: Callable[[], None] | None = None,
    ) -> None:
        self.ledger = ledger
        # Called first in the writer thread: set-up work (a run row) off the search's thread.
        self.on_start = on_start
        self.min_interval = float(min_interval)
        # Called in the writer thread with the number of results committed so far, e.g. to
        # report durable progress without a database write in the search's own thread.
        self.after_commit = after_commit
        self.max_pending = max_pending
        self.cond = threading.Condition()
        self.pending: list[tuple[str, int, dict[str, Any]]] = []
        self.busy = False
        self.closed = False
        self.error: BaseException | None = None
        self.committed = 0
        # Unique per writer: two processes resuming the same search never collide.
        self.token = uuid.uuid4().hex[:12]
        self.seq = 0
        self.thread = threading.Thread(target=self._run, name="safepoint-ledger", daemon=True)
        self.thread.start()

    def put(self, candidate: str, fold: int, result: dict[str, Any]) -> None:
        with self.cond:
            while len(self.pending) >= self.max_pending and self.error is None:
                self.cond.wait()
            self._raise_error()
            self.pending.append((candidate, fold, result))
            if len(self.pending) == 1:  # the writer sleeps only when nothing is pending
                self.cond.notify_all()

    def _raise_error(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            self.closed = True
            raise error

    def _run(self) -> None:
        if self.on_start is not None:
            try:
                self.on_start()
            except BaseException as exc:
                with self.cond:
                    self.error = exc
                    self.cond.notify_all()
                return
        last = float("-inf")
        while True:
            with self.cond:
                while not self.pending and not self.closed:
                    self.cond.wait()
                if not self.pending:
                    return
                # The group window: let results that finish soon after join this commit.
                while not self.closed:
                    remaining = last + self.min_interval - time.monotonic()
                    if remaining <= 0 or len(self.pending) >= self.max_pending:
                        break
                    self.cond.wait(remaining)
                batch, self.pending = self.pending, []
                last = time.monotonic()
                self.busy = True
                self.cond.notify_all()
            try:
                self.seq += 1
                self.ledger.commit(f"{self.token}-{self.seq:06d}", batch)
            except BaseException as exc:
                with self.cond:
                    self.error = exc
                    self.busy = False
                    self.pending.clear()
                    self.cond.notify_all()
                return
            with self.cond:
                self.committed += len(batch)
                self.busy = False
                self.cond.notify_all()
            if self.after_commit is not None:
                self.after_commit(self.committed)

    def close(self) -> None:
        """Commit everything put so far, stop the thread; raise a commit's error if any."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.thread.join()
        with self.cond:
            self._raise_error()


def recorded_fits(checkpointer: Checkpointer) -> int:
    """How many fit results the ledger in ``checkpointer`` holds for its current search."""
    meta = checkpointer.get(META_KEY)
    if not isinstance(meta, dict) or "digest" not in meta:
        return 0
    ledger = Ledger(checkpointer, "")
    ledger.digest, ledger.meta = meta["digest"], meta
    return len(ledger.results())
