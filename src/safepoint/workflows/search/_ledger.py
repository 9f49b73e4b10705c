"""The ledger of a resumable search: one entry per fit, kept in a checkpointer.

Layout inside the checkpointer (any object with ``get/set/keys/delete``, e.g.
``sp.Store(path).checkpointer(name)``):

``search/meta``
    what the fits depend on besides the candidate: the digests of the data, the
    cross-validation splits, the scoring and the options (``return_train_score``,
    ``error_score``), together the *context* digest; the digest of the estimator
    last searched; the seed used to sample candidates; older ledgers still read.
``search/<context16>/<writer>-<seq>``
    a commit of one or more fit results: ``{"fits": [{"c": candidate key, "f": fold,
    "r": result}, ...]}``, each result exactly as scikit-learn's ``_fit_and_score``
    returned it (scores, times, n_test_samples, the error text of a failed fit).
    The candidate key is the digest of the estimator *configured for that fit*
    (the search's estimator with the candidate's parameters set: its class and every
    parameter, fixed or searched), so a fit is found again whatever grid it came
    from: a grid grown, shrunk or reordered reuses every fit it shares with the
    ledger.
``search-refit/<context16>/<name>``
    a final refit on the whole data (the search's ``best_estimator_``), so that a
    rerun after a kill does not redo it.

Results are committed by a background thread (:class:`LedgerWriter`) as they arrive:
one atomic ``set`` per commit. A fit that finishes when the previous commit started at
least ``min_interval`` ago (0.2 s in a search) is committed at once; quicker ones are
grouped with what else finishes within that interval (group commit), so that a stream
of fast fits costs at most five commits a second. A kill at any instant leaves every
committed fit recorded and no partial entry visible; it loses the fits in flight:
running in a worker, or finished within the last commit interval.

Entry keys carry the context digest, so results computed on other data, folds or
scoring can never be mistaken for this search's, even if a restart was interrupted
half-way through deleting them.

Ledgers written by earlier versions (``safepoint.search-ledger/1``, keyed by the
whole grid) are read: their fits are reused when the data, splits, scoring, options
and estimator are the same, found by the digest of the candidate's parameters.
"""

from __future__ import annotations

import datetime as _dt
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

from ...errors import CheckpointMismatchError, SafepointError, UntrustedTypesError

__all__ = ["Ledger", "LedgerStore", "LedgerWriter", "recorded_fits"]

LEDGER_FORMAT = "safepoint.search-ledger/2"
LEDGER_FORMAT_V1 = "safepoint.search-ledger/1"
META_KEY = "search/meta"
_PREFIX = "search/"
_REFIT_PREFIX = "search-refit/"
#: marks a candidate key of a version-1 ledger in :meth:`Ledger.results`
LEGACY = "v1:"

#: Parts of the context, in the order a mismatch report names them.
PART_LABELS = {
    "scoring": "the scoring",
    "options": "return_train_score / error_score",
    "data": "the data (X, y or fit parameters)",
    "splits": "the cross-validation splits",
}
ESTIMATOR_LABEL = "the estimator"
#: version-1 parts that must agree for its fits to be reused (the grid need not)
_V1_PARTS = ("estimator", "scoring", "options", "data", "splits")


@runtime_checkable
class LedgerStore(Protocol):
    """What the ledger needs from a checkpoint: a small key/value interface.

    ``sp.Store(path).checkpointer(name)`` (a :class:`safepoint.Checkpointer`) is one;
    so is any object with these four methods. (Named apart from
    :class:`safepoint.Checkpointer`, which it describes but does not require.)

    Values are plain Python objects (dicts of floats and strings); the checkpointer
    serialises them with the safepoint format, never with pickle.
    """

    def get(self, key: str, default: Any = None) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...

    def keys(self) -> Iterable[str]: ...

    def delete(self, key: str) -> Any: ...


def _restart_hint(where: str, hint: str) -> str:
    return (
        " None of them were reused. Pass on_mismatch='restart' to discard them and start "
        f"afresh, or give this search another checkpoint than {where}.{hint}"
    )


class Ledger:
    """Results of one search in a checkpointer; see the module docstring for the layout."""

    def __init__(self, checkpointer: LedgerStore, where: str) -> None:
        self.cp = checkpointer
        self.where = where
        self.digest = ""
        self.meta: dict[str, Any] = {}

    # -- opening --------------------------------------------------------------------
    def open(
        self,
        digest: str,
        parts: dict[str, str],
        estimator: str,
        on_mismatch: str,
        info: dict[str, Any],
        hint: str = "",
    ) -> dict[str, Any]:
        """Bind the ledger to the context ``digest``; returns the stored (or new) meta.

        A ledger whose fits were computed on other data, splits, scoring or options
        raises CheckpointMismatchError (``on_mismatch="error"``, naming what changed
        and how many fits it holds) or is emptied (``"restart"``). The estimator is
        checked later, by :meth:`check_estimator`, once the candidates are known.
        """
        old = self.cp.get(META_KEY)
        if old is not None and not (isinstance(old, dict) and "digest" in old):
            raise CheckpointMismatchError(
                f"the checkpoint {self.where} holds a key {META_KEY!r} that is not a search "
                "ledger (another workflow wrote it?). Use a checkpoint of its own for the "
                "search, e.g. store.checkpointer('project/my-search')."
            )
        legacy: list[str] = []
        if old is not None:
            fmt = old.get("format")
            changed: list[str] = []
            if fmt == LEDGER_FORMAT_V1:
                old_parts = old.get("parts", {})
                current = {**parts, "estimator": estimator}
                changed = [
                    PART_LABELS.get(name, ESTIMATOR_LABEL)
                    for name in _V1_PARTS
                    if old_parts.get(name) != current.get(name)
                ]
                if not changed:
                    legacy = [str(old["digest"])]
            elif fmt == LEDGER_FORMAT:
                if old["digest"] == digest:
                    self.digest, self.meta = digest, old
                    return old
                changed = [
                    label
                    for name, label in PART_LABELS.items()
                    if old.get("parts", {}).get(name) != parts.get(name)
                ]
            else:
                changed = [f"the ledger's layout ({fmt!r}, written by another safepoint)"]
            if changed:
                n_old = self._count(old)
                if on_mismatch == "error":
                    raise CheckpointMismatchError(
                        f"the checkpoint {self.where} holds {n_old} fit result(s) of a "
                        f"different search (recorded on {old.get('created', '?')}); changed: "
                        f"{', '.join(changed)}." + _restart_hint(self.where, hint)
                    )
                self.clear()
        self.digest = digest
        meta = {
            "format": LEDGER_FORMAT,
            "digest": digest,
            "parts": dict(parts),
            "estimator": estimator,
            "legacy": legacy,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            **info,
        }
        if legacy and old is not None and "sampler_seed" in old:
            meta["sampler_seed"] = old["sampler_seed"]
        self.cp.set(META_KEY, meta)
        self.meta = meta
        return meta

    def check_estimator(self, estimator: str, shared: int, on_mismatch: str, hint: str) -> bool:
        """The estimator changed since the ledger was written: fine while some of this
        search's fits are in the ledger (a grid that now starts with another model type
        changes the pipeline's default step, not the fits); a mismatch when none are.
        Returns True when the ledger was emptied (``on_mismatch="restart"``)."""
        if self.meta.get("estimator") == estimator:
            return False
        if shared == 0:
            n_old = len(self.results())
            if n_old:
                if on_mismatch == "error":
                    raise CheckpointMismatchError(
                        f"the checkpoint {self.where} holds {n_old} fit result(s) of a "
                        f"different search (recorded on {self.meta.get('created', '?')}); "
                        f"changed: {ESTIMATOR_LABEL}." + _restart_hint(self.where, hint)
                    )
                self.clear(keep_meta=True)
                self.update_meta(estimator=estimator, legacy=[])
                return True
        self.update_meta(estimator=estimator)
        return False

    def _count(self, meta: dict[str, Any]) -> int:
        other = Ledger(self.cp, self.where)
        other.digest, other.meta = str(meta.get("digest", "")), meta
        if meta.get("format") == LEDGER_FORMAT_V1:
            other.meta = {"legacy": [other.digest]}
            other.digest = "-"  # no current entries: only the version-1 ones
        return len(other.results())

    def clear(self, keep_meta: bool = False) -> int:
        """Delete every fit and refit of the checkpoint (and its meta, unless kept)."""
        n = 0
        for key in list(self.cp.keys()):  # a checkpointer, not a dict: keys() is its API
            if key.startswith((_PREFIX, _REFIT_PREFIX)) and key != META_KEY:
                self.cp.delete(key)
                n += 1
        if not keep_meta:
            try:
                self.cp.delete(META_KEY)
            except (KeyError, LookupError):
                pass
        return n

    def _entry_keys(self, digest: str) -> Iterable[str]:
        prefix = f"{_PREFIX}{digest[:16]}/"
        for key in self.cp.keys():  # noqa: SIM118 - a checkpointer, not a dict
            if key.startswith(prefix) and key != META_KEY:
                yield key

    # -- entries --------------------------------------------------------------------
    def results(self) -> dict[tuple[str, int], dict[str, Any]]:
        """Every recorded fit of this context, keyed by (candidate key, fold); the fits
        of a version-1 ledger still read are keyed ``("v1:" + its candidate digest, fold)``."""
        found: dict[tuple[str, int], dict[str, Any]] = {}
        sources = [(self.digest, "")] if self.digest else []
        sources += [(str(d), LEGACY) for d in self.meta.get("legacy") or []]
        for digest, mark in sources:
            for key in self._entry_keys(digest):
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
                        found[(mark + cand, fold)] = result
        return found

    def commit(self, key: str, fits: list[tuple[str, int, dict[str, Any]]]) -> None:
        """Commit fit results ``(candidate key, fold, result)`` in one atomic ``set``."""
        value = {"fits": [{"c": c, "f": int(f), "r": r} for c, f, r in fits]}
        self.cp.set(f"{_PREFIX}{self.digest[:16]}/{key}", value)

    def update_meta(self, **fields: Any) -> None:
        self.meta = {**self.meta, **fields}
        self.cp.set(META_KEY, self.meta)

    # -- final refits -------------------------------------------------------------------
    def refit_key(self, name: str) -> str:
        return f"{_REFIT_PREFIX}{self.digest[:16]}/{name}"

    def get_refit(self, name: str, candidate: str) -> dict[str, Any] | None:
        """The refit saved under ``name`` if it is of ``candidate``; None otherwise (also
        when it cannot be read). Raises UntrustedTypesError when it holds types that
        the checkpointer does not trust."""
        try:
            value = self.cp.get(self.refit_key(name))
        except UntrustedTypesError:
            raise
        except SafepointError:
            return None
        if isinstance(value, dict) and value.get("candidate") == candidate:
            return value
        return None

    def set_refit(self, name: str, candidate: str, **fields: Any) -> None:
        self.cp.set(self.refit_key(name), {"candidate": candidate, **fields})


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


def recorded_fits(checkpointer: LedgerStore) -> int:
    """How many fit results the ledger in ``checkpointer`` holds for its current search."""
    meta = checkpointer.get(META_KEY)
    if not isinstance(meta, dict) or "digest" not in meta:
        return 0
    ledger = Ledger(checkpointer, "")
    return ledger._count(meta)
