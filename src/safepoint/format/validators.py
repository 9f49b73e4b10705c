"""Registries of state validators and state migrations, keyed by exact type name.

* A **validator** runs on the decoded constructor arguments and state of a
  type *before* its ``__setstate__`` and returns the state to use; it raises
  ``FormatError`` when internal
  arrays would let compiled code read or write out of bounds (tree children,
  neighbour indices, ...). See :mod:`safepoint.format.handlers.sklearn_`.
* A **migration** rewrites the state written by an older library version into
  what the installed version expects (attributes renamed or added), or raises
  ``FormatError`` explaining what changed and what to do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .decoder import Decoder

__all__ = ["migrate_state", "register_migration", "register_validator", "validate_state"]

Validator = Callable[[list[Any], Any, "Decoder"], Any]
Migration = Callable[[Any, "Decoder"], Any]

_validators: dict[str, list[Validator]] = {}
_migrations: dict[str, list[Migration]] = {}


def register_validator(*type_names: str) -> Callable[[Validator], Validator]:
    def deco(fn: Validator) -> Validator:
        for name in type_names:
            _validators.setdefault(name, []).append(fn)
        return fn

    return deco


def register_migration(*type_names: str) -> Callable[[Migration], Migration]:
    def deco(fn: Migration) -> Migration:
        for name in type_names:
            _migrations.setdefault(name, []).append(fn)
        return fn

    return deco


def validate_state(type_name: str, args: list[Any], state: Any, dec: Decoder) -> Any:
    """Run the validators of ``type_name``; returns the state to use (copies of
    memory-mapped arrays that bounds checks rely on replace the mapped ones)."""
    for fn in _validators.get(type_name, ()):
        state = fn(args, state, dec)
    return state


def migrate_state(type_name: str, state: Any, dec: Decoder) -> Any:
    for fn in _migrations.get(type_name, ()):
        state = fn(state, dec)
    return state
