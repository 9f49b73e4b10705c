"""What Ctrl-C during a checkpointed search prints: one line, not a traceback.

The ``KeyboardInterrupt`` still propagates (a caller may catch it, a notebook shows
it as usual); the line says how many fits are safe and how to resume::

    safepoint: search interrupted: 37 fits saved in 'runs/search' (checkpointer
    'search'); run the same command again to resume

(one line, wrapped here).

When nothing catches it, Python would then print the whole traceback through the
search's internals. A chained ``sys.excepthook`` (installed on the first such
interruption) prints nothing more for an interruption already reported; every other
exception goes to the previous hook unchanged. The process still ends as Python ends
it on Ctrl-C (exit status of SIGINT).
"""

from __future__ import annotations

import sys
import threading
from types import TracebackType
from typing import Any

__all__ = ["report_interrupt"]

_MARK = "_safepoint_reported"
_lock = threading.Lock()
_installed = False


def report_interrupt(exc: KeyboardInterrupt, saved: int, where: str) -> None:
    """Print the one line on stderr and mark ``exc`` as reported."""
    if getattr(exc, _MARK, False):
        return
    try:
        setattr(exc, _MARK, True)
    except AttributeError:  # an exception object without a __dict__: say it anyway
        pass
    print(
        f"safepoint: search interrupted: {saved} fit{'s' if saved != 1 else ''} saved in "
        f"{where}; run the same command again to resume",
        file=sys.stderr,
        flush=True,
    )
    _install()


def _install() -> None:
    global _installed
    with _lock:
        if _installed:
            return
        previous = sys.excepthook

        def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> Any:
            if isinstance(value, KeyboardInterrupt) and getattr(value, _MARK, False):
                return None  # already said, in one line
            return previous(kind, value, tb)

        sys.excepthook = hook
        _installed = True
