"""Per-step options: pin a step's saved output, or make it rerun every time.

``cache=`` decides when a saved output is reused:

* ``"auto"`` (the default): restored while its code (and the code it reaches),
  parameters, inputs and the files it read are unchanged;
* ``"always"``: pinned: once saved, restored whatever changed (the explanation
  still says what changed); only ``start_from`` or a missing output reruns it;
* ``"never"``: rerun at every run (a step that reads from the network, say).

On a method of a :class:`~safepoint.Steps` class::

    class Training(sp.Steps):
        @sp.step(cache="always")
        def step_1(self, outputs):
            return download_the_data()

and on a function, ``@workflow.step(cache="always")``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...errors import StepConfigError

__all__ = ["CACHE_MODES", "StepOptions", "options_of", "step"]

CACHE_MODES = ("auto", "always", "never")
_ATTR = "__safepoint_step__"


@dataclass(frozen=True)
class StepOptions:
    """What ``@sp.step(...)`` set on a step."""

    cache: str = "auto"


def check_cache(cache: Any) -> str:
    if cache not in CACHE_MODES:
        raise StepConfigError(
            f"cache={cache!r} is not one of {', '.join(map(repr, CACHE_MODES))}: 'auto' reruns "
            "a step when what it depends on changed, 'always' pins its saved output, "
            "'never' reruns it every time"
        )
    return str(cache)


def step(func: Callable[..., Any] | None = None, *, cache: str = "auto") -> Any:
    """Set options on a step method of a :class:`~safepoint.Steps` class.

    Example:
        >>> import safepoint as sp
        >>> class Training(sp.Steps):
        ...     @sp.step(cache="always")
        ...     def step_1(self, outputs):
        ...         return [1, 2, 3]
        >>> options_of(Training.step_1).cache
        'always'
    """
    options = StepOptions(cache=check_cache(cache))

    def mark(f: Callable[..., Any]) -> Callable[..., Any]:
        target = f.__func__ if isinstance(f, staticmethod | classmethod) else f
        if not callable(target):
            raise StepConfigError(f"@sp.step needs a function, not {type(f).__name__}")
        try:
            setattr(target, _ATTR, options)
        except (AttributeError, TypeError):
            raise StepConfigError(
                f"@sp.step cannot mark {type(f).__name__} objects; decorate the function"
            ) from None
        return f

    if func is not None:
        return mark(func)
    return mark


def options_of(func: Any) -> StepOptions:
    """The options set on ``func`` by :func:`step` (the defaults when none)."""
    target = func.__func__ if isinstance(func, staticmethod | classmethod) else func
    found = getattr(target, _ATTR, None)
    return found if isinstance(found, StepOptions) else StepOptions()
