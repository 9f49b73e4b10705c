"""What the store holds of a workflow, without the workflow's code: the CLI's and the
console's view of a saved run (``safepoint steps status/outputs``).
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

from ...errors import (
    NotFoundError,
    StepConfigError,
)
from ._api import Steps, Workflow
from ._engine import _StepDef, _WorkflowBase
from ._plan import StoredStep
from ._reports import WorkflowStatus

if TYPE_CHECKING:
    from ...stores.opening import StoreLike
    from ...stores.store import Store

__all__ = ["saved_outputs", "saved_status"]


# -- what the store holds, without the workflow's code (CLI, console) ---------------------
class _SavedView(_WorkflowBase):
    """A workflow seen through its saved outputs only (steps, order and records)."""

    _params_known = False

    def __init__(self, name: str, store: StoreLike, version: int | str, code: Any = None) -> None:
        super().__init__(name, store, version)
        self._code = code

    def saved_steps(self) -> list[tuple[str, StoredStep]]:
        """``(step, latest saved output)`` in step order (as the newest record lists them)."""
        found = []
        for model in self.store.models(self.prefix):
            step = model[len(self.prefix) + 1 :]
            if "/" in step:
                continue
            stored = self._stored(step)
            if stored is not None:
                found.append((step, stored))
        newest = max(found, key=lambda t: t[1].created, default=None)
        order = list(newest[1].record.get("steps") or []) if newest else []

        def key(t: tuple[str, StoredStep]) -> tuple[int, int, str]:
            step, stored = t
            if step in order:
                return (0, order.index(step), step)
            index = stored.record.get("index")
            return (1, index if isinstance(index, int) else 0, step)

        return sorted(found, key=key)

    def _step_defs(self) -> list[_StepDef]:
        return self._code._step_defs() if self._code is not None else []

    def status(self) -> WorkflowStatus:
        saved = [s for s, _ in self.saved_steps()]
        if self._code is not None:
            defs = self._code._checked_steps()
            names = [d.name for d in defs] + [s for s in saved if s not in {d.name for d in defs}]
            return self._status(names, {d.name: d for d in defs})
        if not saved:
            raise NotFoundError(
                f"workflow {self.name!r} v{self.version} has no saved outputs in "
                f"{self.store.url!r}; check the name, --version and --store"
            )
        return self._status(saved, {})


def _resolve_code(spec: Any, name: str, store: Store, version: int | str) -> Any:
    """A workflow object from ``path/to/file.py:Class`` or ``module:attribute``."""
    if spec is None or isinstance(spec, _WorkflowBase):
        return spec
    if isinstance(spec, type) and issubclass(spec, Steps):
        return spec(name=name, store=store, version=version)
    if not isinstance(spec, str) or ":" not in spec:
        raise StepConfigError(
            f"workflow code must be 'path/to/script.py:Class' or 'module:Class', not {spec!r}"
        )
    import importlib
    import importlib.util

    where, _, attr = spec.rpartition(":")
    if where.endswith(".py"):
        mod_name = "_safepoint_workflow_" + re.sub(r"\W", "_", os.path.abspath(where))
        loader_spec = importlib.util.spec_from_file_location(mod_name, where)
        if loader_spec is None or loader_spec.loader is None or not os.path.isfile(where):
            raise StepConfigError(f"cannot read the workflow script {where!r}")
        module = importlib.util.module_from_spec(loader_spec)
        import sys

        sys.modules[mod_name] = module
        loader_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    obj = getattr(module, attr, None)
    if obj is None:
        raise StepConfigError(f"{where!r} has no {attr!r}")
    if isinstance(obj, Workflow):
        return obj
    if isinstance(obj, type) and issubclass(obj, Steps):
        return obj(name=name, store=store, version=version)
    raise StepConfigError(f"{spec!r} is neither a sp.Steps subclass nor a sp.Workflow")


def saved_status(
    store: StoreLike, name: str, version: int | str = 1, *, code: Any = None
) -> WorkflowStatus:
    """The status of a workflow from its saved outputs (what the CLI shows).

    Without ``code`` (a Steps subclass, a Workflow, or ``"script.py:Class"``), the
    steps' code is not compared; parameters are never compared (only the running
    script knows them), so a step is ``stale`` here only when an output it read
    changed since it ran.

    Example:
        >>> print(saved_status("./store", "model-training"))   # doctest: +SKIP
    """
    view = _SavedView(name, store, version)
    view._code = _resolve_code(code, name, view.store, version)
    return view.status()


def saved_outputs(store: StoreLike, name: str, version: int | str = 1) -> list[dict[str, Any]]:
    """The latest saved output of each step: version, type, size, digest (no data read)."""
    view = _SavedView(name, store, version)
    rows = []
    for step, stored in view.saved_steps():
        mv = view.store.info(view._model(step), stored.version)
        rows.append(
            {
                "step": step,
                "ref": mv.ref,
                "version": mv.version,
                "type": stored.type or mv.root_type,
                "size": mv.size,
                "digest": mv.digest,
                "created": mv.created.isoformat(),
                "run_id": mv.run_id,
                "seconds": stored.record.get("seconds"),
            }
        )
    return rows
