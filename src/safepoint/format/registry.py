"""Every registry of the format, in one leaf module: the seams a plugin uses.

The format core (spec, reader, writer, encoder, decoder, construction, trust, api)
imports only this module to find what plugins provide; plugins (the built-in type
handlers, the scikit-learn package, the framework adapters, your own package)
import this module to register. Nothing here imports another safepoint module, so
the dependency only ever points from a plugin to the core.

Registries, all keyed by *name* (so that nothing is imported to look one up):

* **type handlers** (:func:`register`, :func:`register_fallback`): turn objects of
  some types into manifest nodes (plain JSON plus buffers) and back::

      from safepoint.format.registry import register

      @register(tag="mylib.thing", types=["mylib.core.Thing"])
      class ThingHandler:
          @staticmethod
          def encode(obj, enc): return {"v": enc.encode(obj.value)}
          @staticmethod
          def decode(node, dec): return Thing(dec.decode(node["v"]))

  Every node a handler returns gets ``"@": tag``; decoding dispatches on it.
  Handlers construct only their own library's types (numpy, pandas, scipy);
  arbitrary classes go through the audited object handler (tag ``"obj"``).
* **validators** (:func:`register_validator`): run on the decoded constructor
  arguments and state of a type *before* its ``__setstate__`` and return the state
  to use; they raise ``FormatError`` when internal arrays would let compiled code
  read or write out of bounds (tree children, neighbour indices, ...). They are
  pure functions of arrays and state dicts: they never call a method or read a
  property of an object built from the file. To look into an object the state
  holds (a forest's trees), they read the state the decoder built it from, with
  ``dec.state_of(obj, "module.Class", ...)``, which also checks its exact class.
* **reducers** (:func:`register_reducer`): run at write time on the state of an
  object and return the state to store; they break reference cycles that a type
  keeps for convenience (Birch's doubly linked list of leaves) into plain data,
  which the type's validator links again on load.
* **table validators** (:func:`register_table_validator`): check, in one
  vectorised pass, the columns of an object table (``objtab``: many objects of one
  class stored attribute by attribute); one stands in for the per-object
  validators it declares it ``replaces``, and a class with any other validator in
  its MRO is checked object by object.
* **state migrations** (:func:`register_migration`): rewrite the state written by
  an older library version into what the installed version expects (attributes
  renamed or added), or raise ``FormatError`` saying what changed and what to do.
* **type migrations** (:func:`register_type_migration`): a class that no longer
  exists; the audit accepts its old name *only* because a migration is registered,
  and the node is rebuilt by that function, never by importing the old name.
* **trust rules** (:func:`register_trust_rule`) and the **review tables**
  (:func:`register_reviewed`, :func:`register_restricted`,
  :func:`register_callable_slots`): what the default trust set allows beyond the
  caller's ``trusted=`` (the scikit-learn table, the adapters' framework classes).

Built-in plugins load from one list, :data:`BUILTINS` (:func:`load_builtins`,
called once when :mod:`safepoint.format` is imported).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .decoder import Decoder
    from .encoder import Encoder

__all__ = [
    "BUILTINS",
    "Handler",
    "ReplacedType",
    "callable_slots",
    "handler_for_tag",
    "handler_for_type",
    "list_encoder",
    "load_builtins",
    "migrate_state",
    "migrations_of",
    "reduce_state",
    "register",
    "register_callable_slots",
    "register_fallback",
    "register_list_encoder",
    "register_migration",
    "register_reducer",
    "register_restricted",
    "register_reviewed",
    "register_table_validator",
    "register_trust_rule",
    "register_type_migration",
    "register_validator",
    "replaced_type",
    "restricted_types",
    "reviewed",
    "slot_instances",
    "table_validator_of",
    "trusted_by_rules",
    "validate_chain",
    "validate_state",
    "validate_state_of",
]

#: the modules whose import registers the built-in plugins, in order (handlers first:
#: the scikit-learn package and the adapters register against them)
BUILTINS: tuple[str, ...] = (
    "safepoint.format.handlers.builtins",
    "safepoint.format.handlers.strings",
    "safepoint.format.handlers.numpy_",
    "safepoint.format.handlers.objects",
    "safepoint.format.handlers.tables",
    "safepoint.format.handlers.pandas_",
    "safepoint.format.handlers.scipy_",
    "safepoint.format.sklearn.trust_table",
    "safepoint.format.sklearn.validators",
    "safepoint.format.sklearn.model_validators",
    "safepoint.format.sklearn.migrations",
    "safepoint.adapters.registry",
    "safepoint._own_types",
)

_loaded = False


def load_builtins() -> None:
    """Import every module of :data:`BUILTINS` (once); each registers itself here."""
    global _loaded
    if _loaded:
        return
    for name in BUILTINS:
        importlib.import_module(name)
    _loaded = True


# -- type handlers ----------------------------------------------------------------------
class Handler(Protocol):
    @staticmethod
    def encode(obj: Any, enc: Encoder) -> dict[str, Any]: ...

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any: ...


_by_name: dict[str, tuple[str, Handler]] = {}
_by_tag: dict[str, Handler] = {}
_fallbacks: list[tuple[Callable[[type], bool], str, Handler]] = []
_cache: dict[type, tuple[str, Handler] | None] = {}
#: encodes a list as an object table (``objtab``), or returns None (see handlers.tables)
ListEncoder = Callable[[list[Any], "Encoder"], "dict[str, Any] | None"]
_list_encoder: list[ListEncoder] = []


def _type_name(t: type) -> str:
    return f"{t.__module__}.{t.__qualname__}"


def register(tag: str, types: Iterable[str | type] = ()) -> Callable[[Any], Any]:
    """Class decorator: register a handler for a tag and (exact) type names."""

    def deco(handler: Any) -> Any:
        if tag in _by_tag and _by_tag[tag] is not handler:
            raise ValueError(f"tag {tag!r} is already registered")
        _by_tag[tag] = handler
        for t in types:
            _by_name[t if isinstance(t, str) else _type_name(t)] = (tag, handler)
        _cache.clear()
        return handler

    return deco


def register_fallback(tag: str, predicate: Callable[[type], bool]) -> Callable[[Any], Any]:
    """Register a handler for types matched by ``predicate`` (subclasses, families)."""

    def deco(handler: Any) -> Any:
        _by_tag.setdefault(tag, handler)
        _fallbacks.append((predicate, tag, handler))
        _cache.clear()
        return handler

    return deco


def handler_for_type(t: type) -> tuple[str, Handler] | None:
    """The (tag, handler) registered for exactly ``t`` (or by a fallback), if any."""
    try:
        return _cache[t]
    except KeyError:
        pass
    found = _by_name.get(_type_name(t))
    if found is None:
        for pred, tag, handler in _fallbacks:
            if pred(t):
                found = (tag, handler)
                break
    _cache[t] = found
    return found


def handler_for_tag(tag: str) -> Handler | None:
    """The handler that decodes nodes tagged ``tag``, if any."""
    return _by_tag.get(tag)


def register_list_encoder(fn: ListEncoder) -> ListEncoder:
    """Register the function that writes a list of like objects as one object table."""
    _list_encoder[:] = [fn]
    return fn


def list_encoder() -> ListEncoder | None:
    return _list_encoder[0] if _list_encoder else None


# -- validators, reducers, table validators, state migrations ----------------------------
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
    """Decorator: ``fn(args, state, decoder) -> state`` checks objects of ``type_names``
    and of their subclasses before they are built."""

    def deco(fn: Validator) -> Validator:
        for name in type_names:
            _validators.setdefault(name, []).append(fn)
        _chains.clear()
        return fn

    return deco


def register_migration(*type_names: str) -> Callable[[Migration], Migration]:
    """Decorator: ``fn(state, decoder) -> state`` rewrites an older library's state."""

    def deco(fn: Migration) -> Migration:
        for name in type_names:
            _migrations.setdefault(name, []).append(fn)
        return fn

    return deco


def register_reducer(*type_names: str) -> Callable[[Reducer], Reducer]:
    """Decorator: ``fn(obj, state) -> state`` is the state written for ``obj``."""

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
    every check of the per-object validators in ``replaces``.

    ``replaces`` must name the class's per-object validators: a table is checked by them
    instead when its objects are big (``tables.TABLE_VALIDATOR_MAX_ROWS``), so a class
    is never checked by a table validator alone."""
    if not replaces:
        raise ValueError(f"the table validator of {type_name} must name what it replaces")

    def deco(fn: TableValidator) -> TableValidator:
        _table_validators[type_name] = (fn, replaces)
        return fn

    return deco


def table_validator_of(cls: type) -> TableValidator | None:
    """The table validator for objects of exactly ``cls``, if it replaces exactly the
    validators of ``cls``'s MRO: no more (each object is then checked by them, which a
    table may choose instead) and no fewer (the table validator must cover them all)."""
    found = _table_validators.get(f"{cls.__module__}.{cls.__qualname__}")
    if found is None:
        return None
    fn, replaces = found
    if set(map(id, _chain(cls))) != set(map(id, replaces)):
        return None
    return fn


def migrations_of(type_name: str) -> tuple[Migration, ...]:
    """The migrations registered for ``type_name``, in the order they run."""
    return tuple(_migrations.get(type_name, ()))


def migrate_state(type_name: str, state: Any, dec: Decoder) -> Any:
    for fn in _migrations.get(type_name, ()):
        state = fn(state, dec)
    return state


# -- type migrations ----------------------------------------------------------------------
class ReplacedType:
    """Stands, after the audit, for a class the installed library no longer has.

    ``build(node, decoder)`` rebuilds the value from the node's decoded parts
    (constructor arguments ``a``, state ``s``, list items ``li``, dict items
    ``di``) without importing the old name.
    """

    def __init__(self, name: str, build: Callable[[dict[str, Any], Decoder], Any]) -> None:
        self.name = name
        self._build = build

    def build(self, node: dict[str, Any], dec: Decoder) -> Any:
        return self._build(node, dec)

    def __repr__(self) -> str:
        return f"<migrated type {self.name}>"


Build = Callable[[dict[str, Any], "Decoder"], Any]
_replaced: dict[tuple[str, str | None], ReplacedType] = {}


def register_type_migration(*type_names: str, kind: str | None = None) -> Callable[[Build], Build]:
    """Decorator: ``fn(node, decoder) -> value`` rebuilds the nodes of ``type_names``
    (only those of node kind ``kind``, ``"obj"``/``"red"``/``"pyx"``, if given)."""

    def deco(fn: Build) -> Build:
        for name in type_names:
            _replaced[(name, kind)] = ReplacedType(name, fn)
        return fn

    return deco


def replaced_type(module: str, qualname: str, kind: str | None = None) -> ReplacedType | None:
    """The migration for nodes of ``module.qualname`` (of node kind ``kind``), if any."""
    name = f"{module}.{qualname}"
    return _replaced.get((name, kind)) or _replaced.get((name, None))


# -- the default trust set ------------------------------------------------------------------
#: ``rule(module, qualname, kind) -> bool``: True when the row is in the default trust set
TrustRule = Callable[[str, str, str], bool]
_trust_rules: list[TrustRule] = []
#: (method, defining class) -> (why running it on data from a file is harmless, its test)
_reviewed: dict[tuple[str, str], tuple[str, str]] = {}
#: restricted type -> the (owner class, attribute) slots it may occupy
_restricted: dict[str, frozenset[tuple[str, str]]] = {}
#: class -> the attributes that hold a callable (a trusted function, never an instance)
_callable_slots: dict[str, tuple[str, ...]] = {}
#: attribute -> the classes whose instances it may hold instead (scorers)
_slot_instances: dict[str, frozenset[str]] = {}


def register_trust_rule(rule: TrustRule) -> TrustRule:
    """Add ``rule(module, qualname, kind) -> bool`` to the default trust set. A rule
    decides without importing anything; a row is trusted when any rule says so."""
    _trust_rules.append(rule)
    return rule


def trusted_by_rules(module: str, qualname: str, kind: str) -> bool:
    return any(rule(module, qualname, kind) for rule in _trust_rules)


def register_reviewed(table: Mapping[tuple[str, str], tuple[str, str]]) -> None:
    """Special methods (``("__setstate__", "pkg.mod.Class")``) that may run on a trusted
    class, each with the reason it is harmless and the test that shows it."""
    _reviewed.update(table)


def reviewed(method: str, owner: str) -> bool:
    return (method, owner) in _reviewed


def register_restricted(table: Mapping[str, frozenset[tuple[str, str]]]) -> None:
    """Types trusted only in the listed (owner class, attribute) slots."""
    _restricted.update(table)


def restricted_types() -> Mapping[str, frozenset[tuple[str, str]]]:
    return _restricted


def register_callable_slots(
    slots: Mapping[str, tuple[str, ...]], instances: Mapping[str, frozenset[str]] | None = None
) -> None:
    """Attributes of a class that hold a function (checked to be a trusted reference),
    and the classes whose instances an attribute may hold instead."""
    _callable_slots.update(slots)
    _slot_instances.update(instances or {})


def callable_slots(type_name: str) -> tuple[str, ...]:
    return _callable_slots.get(type_name, ())


def slot_instances(slot: str) -> frozenset[str]:
    return _slot_instances.get(slot, frozenset())
