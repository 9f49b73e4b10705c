"""Mappings that remember which keys a step read.

A step receives ``outputs`` (the results of earlier steps) and may read
``params``; both are wrapped so that the workflow knows exactly what the step
depends on. A step that reads ``outputs["step_1"]`` reruns when step_1's output
changes; a step that reads nothing from step_1 does not::

    >>> seen = TrackedMapping({"step_1": 1, "step_2": 2}, what="outputs", owner="step_3")
    >>> seen["step_2"]
    2
    >>> sorted(seen.read)
    ['step_2']
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = ["LazyOutputs", "TrackedMapping"]

_MISSING = object()


class TrackedMapping(Mapping[str, Any]):
    """A read-only view of ``data`` that records every key read through it.

    ``read`` holds the keys read, including keys that were asked for but absent
    (``get("alpha")`` of a missing parameter), so that adding that key later
    counts as a change. Iterating over values or items reads every key.
    """

    def __init__(self, data: Mapping[str, Any], *, what: str, owner: str) -> None:
        self._data = data
        self._what = what
        self._owner = owner
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        try:
            return self._data[key]
        except KeyError:
            available = ", ".join(self._data) or "none"
            if self._what == "outputs":
                hint = (
                    f"{self._owner} can read the outputs of the steps before it: {available}. "
                    "Check the step name, or move the step after the one it needs."
                )
            else:
                hint = f"the workflow's params are: {available}. Pass it in params=."
            raise KeyError(
                f"{self._owner} reads {self._what}[{key!r}], which does not exist; {hint}"
            ) from None

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        if key in self._data:
            return self._data[key]
        return default

    def __contains__(self, key: object) -> bool:
        # for params, which keys exist is part of the read: adding a parameter the
        # step tested for must rerun it; earlier outputs always exist
        if isinstance(key, str) and self._what != "outputs":
            self.read.add(key)
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def values(self) -> Any:
        self.read.update(self._data)
        return self._data.values()

    def items(self) -> Any:
        self.read.update(self._data)
        return self._data.items()

    def __repr__(self) -> str:
        return f"<{self._what} of {self._owner}: {', '.join(self._data)}>"


class LazyOutputs(Mapping[str, Any]):
    """Step outputs of a run: values computed in this run, or restored on first read.

    A restored step's output is loaded from the store only when a later step (or
    the caller) reads it, then kept; a run where nothing changed loads nothing.
    """

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}
        self._loaders: dict[str, Callable[[], Any]] = {}
        self._order: list[str] = []

    def set_value(self, name: str, value: Any) -> None:
        if name not in self._values and name not in self._loaders:
            self._order.append(name)
        self._loaders.pop(name, None)
        self._values[name] = value

    def set_loader(self, name: str, loader: Callable[[], Any]) -> None:
        if name not in self._values and name not in self._loaders:
            self._order.append(name)
        self._values.pop(name, None)
        self._loaders[name] = loader

    def is_loaded(self, name: str) -> bool:
        return name in self._values

    def view(self, names: list[str]) -> dict[str, Any]:
        """A plain mapping of ``names`` whose values load when read."""
        return _Subset(self, names)  # type: ignore[return-value]

    def __getitem__(self, name: str) -> Any:
        if name in self._values:
            return self._values[name]
        loader = self._loaders.get(name)
        if loader is None:
            raise KeyError(name)
        value = loader()
        self._values[name] = value
        del self._loaders[name]
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, name: object) -> bool:
        return name in self._values or name in self._loaders

    def __repr__(self) -> str:
        parts = [f"{n}{'' if n in self._values else ' (not loaded)'}" for n in self._order]
        return f"<outputs: {', '.join(parts)}>"


class _Subset(Mapping[str, Any]):
    def __init__(self, outputs: LazyOutputs, names: list[str]) -> None:
        self._outputs = outputs
        self._names = [n for n in names if n in outputs]

    def __getitem__(self, name: str) -> Any:
        if name not in self._names:
            raise KeyError(name)
        return self._outputs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names
