"""Registries of state validators and state migrations, keyed by exact type name.

* A **validator** runs on the decoded constructor arguments and state of a
  type *before* its ``__setstate__`` and returns the state to use; it raises
  ``FormatError`` when internal
  arrays would let compiled code read or write out of bounds (tree children,
  neighbour indices, ...). See :mod:`safepoint.format.handlers.sklearn_`.
  Validators are pure functions of arrays and state dicts: they never call a
  method or read a property of an object built from the file. To look into
  an object the state holds (a forest's trees), they read the state the decoder
  built it from, with ``dec.state_of(obj, "module.Class", ...)``, which also
  checks its exact class.
* A **reducer** runs at write time on the state of an object of a type and
  returns the state to store; it breaks reference cycles that a type keeps for
  convenience (Birch's doubly linked list of leaves) into plain data, which the
  type's validator links again on load.
* A **table validator** checks, in one vectorised pass, the columns of an
  object table (``objtab``: many objects of one class stored attribute by
  attribute, see :mod:`safepoint.format.handlers.tables`). It stands in for the
  per-object validators it declares it ``replaces``; a class with any other
  validator in its MRO is checked object by object.
* A **migration** rewrites the state written by an older library version into
  what the installed version expects (attributes renamed or added), or raises
  ``FormatError`` explaining what changed and what to do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .decoder import Decoder

__all__ = [
    "migrate_state",
    "reduce_state",
    "register_migration",
    "register_reducer",
    "register_table_validator",
    "register_validator",
    "table_validator_of",
    "validate_chain",
    "validate_state",
    "validate_state_of",
]

Validator = Callable[[list[Any], Any, "Decoder"], Any]
Migration = Callable[[Any, "Decoder"], Any]
Reducer = Callable[[Any, Any], Any]
#: (columns by attribute, per-object lengths of the array columns, object count, decoder)
TableValidator = Callable[[dict[str, Any], dict[str, Any], int, "Decoder"], None]

_validators: dict[str, list[Validator]] = {}
_migrations: dict[str, list[Migration]] = {}
_reducers: dict[str, list[Reducer]] = {}
_table_validators: dict[str, tuple[TableValidator, tuple[Validator, ...]]] = {}


#: class -> the validators of its MRO, in order (a forest validates thousands of
#: trees of a handful of classes); emptied whenever a validator is registered
_chains: dict[type, tuple[Validator, ...]] = {}


def register_validator(*type_names: str) -> Callable[[Validator], Validator]:
    def deco(fn: Validator) -> Validator:
        for name in type_names:
            _validators.setdefault(name, []).append(fn)
        _chains.clear()
        return fn

    return deco


def register_migration(*type_names: str) -> Callable[[Migration], Migration]:
    def deco(fn: Migration) -> Migration:
        for name in type_names:
            _migrations.setdefault(name, []).append(fn)
        return fn

    return deco


def register_reducer(*type_names: str) -> Callable[[Reducer], Reducer]:
    def deco(fn: Reducer) -> Reducer:
        for name in type_names:
            _reducers.setdefault(name, []).append(fn)
        return fn

    return deco


def reduce_state(type_name: str, obj: Any, state: Any) -> Any:
    """The state to write for ``obj`` (a new object: the live state is not changed)."""
    for fn in _reducers.get(type_name, ()):
        state = fn(obj, state)
    return state


def validate_state(type_name: str, args: list[Any], state: Any, dec: Decoder) -> Any:
    """Run the validators of ``type_name``; returns the state to use (copies of
    memory-mapped arrays that bounds checks rely on replace the mapped ones)."""
    for fn in _validators.get(type_name, ()):
        state = fn(args, state, dec)
    return state


def validate_state_of(cls: type, args: list[Any], state: Any, dec: Decoder) -> Any:
    """Run the validators of ``cls`` and of every base class, each function once.

    A crafted file cannot skip a check by naming a subclass (or a compiled base)
    of a validated type; a validator registered under several of those names
    runs once.
    """
    for fn in _chain(cls):
        state = fn(args, state, dec)
    return state


#: the name construction uses (:mod:`safepoint.format.construction`)
validate_chain = validate_state_of


def _chain(cls: type) -> tuple[Validator, ...]:
    chain = _chains.get(cls)
    if chain is None:
        done: set[int] = set()
        fns: list[Validator] = []
        for klass in cls.__mro__:
            for fn in _validators.get(f"{klass.__module__}.{klass.__qualname__}", ()):
                if id(fn) not in done:
                    done.add(id(fn))
                    fns.append(fn)
        chain = _chains[cls] = tuple(fns)
    return chain


def register_table_validator(
    type_name: str, *, replaces: tuple[Validator, ...]
) -> Callable[[TableValidator], TableValidator]:
    """Register the table validator of the exact class ``type_name``, which performs
    every check of the per-object validators in ``replaces``."""

    def deco(fn: TableValidator) -> TableValidator:
        _table_validators[type_name] = (fn, replaces)
        return fn

    return deco


def table_validator_of(cls: type) -> TableValidator | None:
    """The table validator for objects of exactly ``cls``, if it covers every
    validator of ``cls``'s MRO."""
    found = _table_validators.get(f"{cls.__module__}.{cls.__qualname__}")
    if found is None:
        return None
    fn, replaces = found
    chain = _chain(cls)
    if not set(map(id, chain)) <= set(map(id, replaces)):
        return None
    return fn


def migrations_of(type_name: str) -> tuple[Migration, ...]:
    """The migrations registered for ``type_name``, in the order they run."""
    return tuple(_migrations.get(type_name, ()))


def migrate_state(type_name: str, state: Any, dec: Decoder) -> Any:
    for fn in _migrations.get(type_name, ()):
        state = fn(state, dec)
    return state
