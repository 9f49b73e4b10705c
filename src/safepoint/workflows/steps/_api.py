"""The two public forms of a step workflow: :class:`Steps` (class) and :class:`Workflow`
(decorators). Both run on the engine in :mod:`._engine`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ...errors import (
    StepConfigError,
)
from ._engine import _SEGMENT, _STEP_NAME, _StepDef, _WorkflowBase
from ._options import StepOptions, check_cache, options_of

if TYPE_CHECKING:
    from ...stores.opening import StoreLike

__all__ = ["Steps", "Workflow"]


# -- class form ------------------------------------------------------------------------
class Steps(_WorkflowBase):
    """Base class of a resumable workflow whose steps are methods ``step_1 ... step_N``.

    Args:
        name: the workflow's name in the store (a namespaced path, e.g. ``"fraud/training"``).
        store: a :class:`safepoint.Store`, a store URL or a folder (default: ``.safepoint``).
        version: each version keeps its own outputs (``1``, ``2``, ...).
        params: parameters the steps read as ``self.params[...]``; a step reruns
            when a parameter it read changes.
        trusted: extra types to trust when restoring outputs (see ``sp.load``).
        checkpoint_folder: the older name of ``store`` (a folder).

    Each ``step_N(self, outputs)`` receives the outputs of the steps before it
    (``outputs["step_1"]``, ...) and returns what to save; steps run in numeric
    order (step_10 after step_9).

    Example:
        >>> import safepoint as sp
        >>> class Double(sp.Steps):
        ...     def step_1(self, outputs):
        ...         return [1, 2, 3]
        ...     def step_2(self, outputs):
        ...         return [x * self.params["k"] for x in outputs["step_1"]]
        >>> import tempfile; folder = tempfile.mkdtemp()
        >>> wf = Double(name="double", store=folder, params={"k": 2})
        >>> wf.run().ran
        ['step_1', 'step_2']
        >>> wf.run().ran
        []
        >>> wf.load_outputs()["step_2"]
        [2, 4, 6]
    """

    def _step_defs(self) -> list[_StepDef]:
        found: dict[int, str] = {}
        for attr in dir(type(self)):
            m = _STEP_NAME.match(attr)
            if not m:
                continue
            func = inspect.getattr_static(type(self), attr)
            if not callable(func):
                continue
            number = int(m.group(1))
            if number in found:
                raise StepConfigError(
                    f"{type(self).__name__} defines both {found[number]} and {attr}: "
                    "step numbers must be unique"
                )
            found[number] = attr
        defs = []
        for number in sorted(found):
            attr = found[number]
            func = inspect.getattr_static(type(self), attr)
            owner = None if isinstance(func, staticmethod) else self
            if isinstance(func, staticmethod | classmethod):
                func = func.__func__
            bound = getattr(self, attr)
            defs.append(
                _StepDef(
                    attr, number, func, _method_caller(bound), owner=owner, options=options_of(func)
                )
            )
        return defs


def _method_caller(
    bound: Callable[..., Any],
) -> Callable[[Mapping[str, Any], Mapping[str, Any]], Any]:
    def call(outputs: Mapping[str, Any], params: Mapping[str, Any]) -> Any:
        return bound(outputs)

    return call


# -- decorator form --------------------------------------------------------------------
class Workflow(_WorkflowBase):
    """A resumable workflow of plain functions registered with ``@workflow.step``.

    Steps run in the order they are declared, or by ``order=`` numbers (all
    steps then need one), or by the number in names ``step_N``. A step function
    takes ``(outputs)`` or ``(outputs, params)``; ``outputs`` is keyed by step
    (function) name.

    Example:
        >>> import safepoint as sp, tempfile
        >>> wf = sp.Workflow("demo/squares", store=tempfile.mkdtemp(), params={"n": 4})
        >>> @wf.step
        ... def numbers(outputs, params):
        ...     return list(range(params["n"]))
        >>> @wf.step
        ... def squares(outputs):
        ...     return [x * x for x in outputs["numbers"]]
        >>> wf.run().ran
        ['numbers', 'squares']
        >>> wf.load_outputs()["squares"]
        [0, 1, 4, 9]
    """

    def __init__(
        self,
        name: str,
        store: StoreLike = None,
        version: int | str = 1,
        params: Mapping[str, Any] | None = None,
        *,
        trusted: Any = (),
    ) -> None:
        super().__init__(name, store, version, params, trusted=trusted)
        self._registered: list[tuple[str, int | None, Callable[..., Any]]] = []
        self._options: dict[str, StepOptions] = {}

    def step(
        self,
        func: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        order: int | None = None,
        cache: str | None = None,
    ) -> Any:
        """Register ``func`` as a step (usable as ``@wf.step`` or ``@wf.step(order=2)``).

        ``cache="always"`` pins the step's saved output (restored whatever changed,
        the explanation still says what), ``cache="never"`` reruns it at every run;
        the default ``"auto"`` reruns it when what it depends on changed.
        """
        options = None if cache is None else StepOptions(cache=check_cache(cache))

        def register(f: Callable[..., Any]) -> Callable[..., Any]:
            if not callable(f):
                raise StepConfigError(f"@step needs a function, not {type(f).__name__}")
            step_name = name or getattr(f, "__name__", None)
            if not isinstance(step_name, str) or not _SEGMENT.match(step_name):
                raise StepConfigError(
                    f"step name {step_name!r} is not usable: pass name= with letters, "
                    "digits, '.', '_' or '-'"
                )
            if order is not None and (isinstance(order, bool) or not isinstance(order, int)):
                raise StepConfigError(f"order= must be an int, not {type(order).__name__}")
            if any(n == step_name for n, _, _ in self._registered):
                raise StepConfigError(f"workflow {self.name!r} already has a step {step_name!r}")
            self._registered.append((step_name, order, f))
            self._options[step_name] = options or options_of(f)
            return f

        if func is not None:
            return register(func)
        return register

    def _step_defs(self) -> list[_StepDef]:
        regs = self._registered
        explicit = [o for _, o, _ in regs if o is not None]
        numbered = [_STEP_NAME.match(n) for n, _, _ in regs]
        if explicit and len(explicit) != len(regs):
            missing = [n for n, o, _ in regs if o is None]
            raise StepConfigError(
                f"some steps have order= and some do not ({', '.join(missing)}): give every "
                "step an order, or none (then they run in the order they are declared)"
            )
        if explicit:
            numbers = explicit
        elif regs and all(numbered):
            numbers = [int(m.group(1)) for m in numbered if m]
        else:
            numbers = list(range(1, len(regs) + 1))
        if len(set(numbers)) != len(numbers):
            raise StepConfigError(f"step orders must be unique, got {sorted(numbers)}")
        defs = [
            _StepDef(n, num, f, _function_caller(f), options=self._options.get(n, StepOptions()))
            for num, (n, _, f) in sorted(zip(numbers, regs, strict=True), key=lambda t: t[0])
        ]
        return defs


def _function_caller(
    f: Callable[..., Any],
) -> Callable[[Mapping[str, Any], Mapping[str, Any]], Any]:
    try:
        sig = inspect.signature(f)
        positional = [
            p
            for p in sig.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        wants_params = len(positional) >= 2 or "params" in sig.parameters
    except (TypeError, ValueError):
        wants_params = False

    def call(outputs: Mapping[str, Any], params: Mapping[str, Any]) -> Any:
        return f(outputs, params) if wants_params else f(outputs)

    return call
