"""Pause Python's cyclic garbage collector while a model is written or rebuilt.

Writing or rebuilding a model allocates thousands of containers (each object's
state dict, lists of estimators, rows of an object table), all of them live
until the call returns. The collector runs every few hundred allocations and,
now and then, walks the whole heap: in a fresh process that has imported
scikit-learn and pandas, such a full collection takes 25-40 ms and finds nothing
to free, so a forest's save or a boosted model's load paid for one or two of
them (M2's save: 95 ms with the collector, 45 ms without). Nothing safepoint
creates is cyclic garbage, so the collector is paused for the call and resumed
after it; objects allocated meanwhile are tracked and collected as usual from
then on.
"""

from __future__ import annotations

import gc
import threading

__all__ = ["paused"]

_lock = threading.Lock()
_depth = 0
_resume = False


class _Paused:
    """The context manager :func:`paused` returns: one, stateless (the state is the
    module's), reused by every call; a class, as a generator-based context manager
    costs about a microsecond per small load."""

    __slots__ = ()

    def __enter__(self) -> None:
        global _depth, _resume
        with _lock:
            if _depth == 0:
                _resume = gc.isenabled()
                gc.disable()
            _depth += 1

    def __exit__(self, *exc: object) -> None:
        global _depth
        with _lock:
            _depth -= 1
            if _depth == 0 and _resume:
                gc.enable()


_PAUSED = _Paused()


def paused() -> _Paused:
    """Disable the collector for the block; the last of nested or concurrent
    blocks restores what the collector was doing before the first one."""
    return _PAUSED
