"""The one place where an object of a class named by a file is built.

Every instance a load creates from an audited class (``obj``, ``red`` and
``pyx`` nodes, object tables, the pickle importer) goes through :func:`build`,
which makes "nothing from the file runs during a load" hold by construction:

* the state is migrated, then checked by the validators of every class of the
  MRO (pure functions of arrays and state dicts, see :mod:`.validators`), then
  given to the object by assignment, or by a ``__setstate__`` that is
  reviewed (``sklearn.trust_table.REVIEWED``) or belongs to a class the caller trusted
  by name;
* no state key may shadow a method, property or other descriptor of the class
  (an instance attribute named ``predict_proba`` would make the model call a
  function of the file's choosing where scikit-learn calls a method);
* every *callable slot* (a parameter or attribute scikit-learn calls: ``func``,
  ``metric``, ``kernel``, ``score_func``, ... generated from the estimators' own
  documentation, ``sklearn._generated.CALLABLE_SLOTS``) holds a function trusted
  by name, a string, None, a number or an array, never an instance of a class
  (scorers excepted where ``sklearn.trust_table.SLOT_INSTANCES`` allows them);
* list and dict items (pickle's ``listitems``/``dictitems``) only go into
  classes whose ``extend``/``__setitem__`` are the builtin ones;
* a *restricted* type (``sklearn.trust_table.RESTRICTED``: ``Bunch``) must end up in
  one of its listed slots, once; anywhere else the load fails.

The decoder records each object's (arguments, state) so that validators of a
containing object read the states of the objects it holds
(:meth:`Decoder.state_of`) instead of calling their methods or properties.
"""

from __future__ import annotations

import functools
import inspect
import types as _types
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .registry import (
    callable_slots,
    migrations_of,
    restricted_types,
    reviewed,
    slot_instances,
    validate_chain,
)

if TYPE_CHECKING:
    from .trust import TrustPolicy

__all__ = [
    "BuildRecord",
    "ClassPlan",
    "ConstructionContext",
    "build",
    "check_callable_value",
    "check_methods_allowed",
    "check_names",
    "plan_for",
    "set_state",
]


class ConstructionContext(Protocol):
    """What :func:`build` needs of its caller (the format's decoder, the importer)."""

    policy: TrustPolicy

    def fail(self, msg: str) -> Exception: ...

    def record(self, obj: Any, plan: ClassPlan, args: list[Any], state: Any) -> None: ...


#: classes whose states are not kept for :meth:`BuildRecord.state_of` (only their
#: arguments): a Tree copies its node arrays, and keeping the originals to the end of
#: the load would double the memory of a forest
_ARGS_ONLY = frozenset({"sklearn.tree._tree.Tree"})


class BuildRecord:
    """How each object of one load was built, for the checks that span objects.

    Shared by the format's :class:`~safepoint.format.decoder.Decoder` and the pickle
    importer: validators of a containing object read the states of the objects it
    holds (:meth:`state_of`), never their methods or properties; restricted objects
    (``Bunch``) must end up in one of their slots (:meth:`finish`).
    """

    def __init__(self, policy: TrustPolicy) -> None:
        self.policy = policy
        #: id -> (object, its class plan, constructor arguments, state)
        self.built: dict[int, tuple[Any, ClassPlan, list[Any], Any]] = {}
        #: id -> (object, type name): restricted objects no allowed slot holds yet
        self.unclaimed: dict[int, tuple[Any, str]] = {}
        self.restricted: set[int] = set()

    def fail(self, msg: str) -> Exception:  # pragma: no cover - subclasses word it
        raise NotImplementedError

    def record(self, obj: Any, plan: ClassPlan, args: list[Any], state: Any) -> None:
        """Remember how ``obj`` was built; claim restricted objects its state holds in
        their slots, and register ``obj`` if it is restricted itself."""
        self.built[id(obj)] = (obj, plan, args, None if plan.name in _ARGS_ONLY else state)
        if self.unclaimed and plan.restricted_slots and type(state) is dict:
            for attr in plan.restricted_slots:
                value = state.get(attr)
                if value is not None and id(value) in self.unclaimed:
                    del self.unclaimed[id(value)]
        if plan.name in restricted_types() and not self.policy.trusted_by_caller(plan.name):
            self.unclaimed[id(obj)] = (obj, plan.name)
            self.restricted.add(id(obj))

    def shared(self, obj: Any) -> None:
        """``obj`` is used a second time (a memo reference): a restricted object held by
        its slot and by something else would pass the slot check once."""
        if id(obj) in self.restricted:
            raise self.fail("a restricted object (a Bunch) is shared (crafted file?)")

    def state_of(
        self, obj: Any, *type_names: str, what: str = "an object"
    ) -> tuple[list[Any], Any]:
        """The (constructor arguments, state) ``obj`` was built from, if this load built
        it from exactly one of ``type_names`` (any audited class if none are given)."""
        entry = self.built.get(id(obj))
        if entry is None or entry[0] is not obj:
            expected = " or ".join(type_names) or "model object"
            raise self.fail(
                f"{what} is a {type(obj).__module__}.{type(obj).__qualname__} where a "
                f"{expected} was expected (crafted file?)"
            )
        if type_names and entry[1].name not in type_names:
            raise self.fail(
                f"{what} is a {entry[1].name}, not a {' or '.join(type_names)} (crafted file?)"
            )
        return entry[2], entry[3]

    def finish(self) -> None:
        """The checks that need the whole tree: every restricted object sits in a slot
        that allows it."""
        if self.unclaimed:
            names = sorted({name for _, name in self.unclaimed.values()})
            raise self.fail(
                f"{', '.join(names)} may only appear where scikit-learn keeps it "
                "(e.g. Voting/Stacking's named_estimators_); the file puts it elsewhere "
                "(crafted file?)"
            )


_FUNCTION_TYPES: tuple[type, ...] = (
    _types.FunctionType,
    _types.BuiltinFunctionType,
    _types.MethodWrapperType,
    np.ufunc,
)


#: function types of compiled libraries (their instances are only ever made by a ``ref``
#: node, resolved by exact name; no node kind can construct one)
_COMPILED_FUNCTIONS = frozenset(
    {
        ("builtins", "cython_function_or_method"),
        ("_cython_3_0_11", "cython_function_or_method"),
        ("numpy", "_ArrayFunctionDispatcher"),
        ("numpy._core._multiarray_umath", "_ArrayFunctionDispatcher"),
    }
)


def _is_function(value: Any) -> bool:
    """A function stored by reference (audited by exact name), never an instance."""
    t = type(value)
    return (
        t in _FUNCTION_TYPES
        or t.__name__ == "cython_function_or_method"
        or (t.__module__, t.__qualname__) in _COMPILED_FUNCTIONS
    )


@dataclass(frozen=True)
class ClassPlan:
    """Everything about building instances of one class that does not depend on
    the instance, settled once per class and process."""

    cls: type
    name: str
    #: the class's own __setstate__ (None: assign the state to __dict__ / slots)
    setstate: Callable[[Any, Any], Any] | None
    #: the class defining a custom __setstate__ / __new__ (None: object's)
    setstate_owner: str | None
    new_owner: str | None
    #: attribute names an instance's state may not take (methods, properties, ...)
    shadowed: frozenset[str]
    #: attribute name -> allowed instance class names, for every callable slot of the MRO
    slots: dict[str, frozenset[str]]
    #: (class name, attribute) slots the decoder may find restricted objects in
    restricted_slots: tuple[str, ...]
    list_items_ok: bool
    dict_items_ok: bool
    #: a class written in Python (not a compiled extension type)
    heap: bool


_plans: dict[type, ClassPlan] = {}


def _owner(cls: type, attr: str) -> type | None:
    for klass in cls.__mro__:
        if attr in vars(klass):
            return klass
    return None


def _qual(klass: type) -> str:
    return f"{klass.__module__}.{klass.__qualname__}"


def _descriptors(cls: type) -> frozenset[str]:
    """Names whose class-level value is a method, property or other descriptor:
    an instance attribute of that name would stand in for it (or be ignored)."""
    out = set()
    for name in dir(cls):
        try:
            attr = inspect.getattr_static(cls, name)
        except AttributeError:
            continue
        if name in ("__dict__", "__weakref__", "__doc__", "__module__", "__annotations__"):
            continue
        if hasattr(type(attr), "__get__"):
            out.add(name)
    return frozenset(out)


def plan_for(cls: type) -> ClassPlan:
    """The :class:`ClassPlan` of ``cls`` (cached)."""
    plan = _plans.get(cls)
    if plan is not None:
        return plan
    setstate = getattr(cls, "__setstate__", None)
    base_setstate = getattr(object, "__setstate__", None)
    owner = _owner(cls, "__setstate__") if setstate is not None else None
    if setstate is base_setstate or owner is object or owner is None:
        setstate, owner = None, None
    new_owner = _owner(cls, "__new__")
    # a compiled class's __new__ is Cython's allocator (covered by the class's entry in
    # the trust table); a Python-level __new__ is code that runs, and is reviewed
    if new_owner is None or not isinstance(vars(new_owner).get("__new__"), staticmethod):
        new_owner = None
    slots: dict[str, frozenset[str]] = {}
    restricted: list[str] = []
    for klass in cls.__mro__:
        for slot in callable_slots(_qual(klass)):
            slots[slot] = slot_instances(slot)
    name = _qual(cls)
    for allowed in restricted_types().values():
        restricted += [attr for owner_name, attr in allowed if owner_name == name]
    plan = ClassPlan(
        cls=cls,
        name=name,
        setstate=setstate,
        setstate_owner=_qual(owner) if owner is not None else None,
        new_owner=_qual(new_owner) if new_owner is not None else None,
        # a compiled __setstate__ reads its state into typed fields (whose names are
        # the class's properties); only a state that lands in __dict__ can shadow
        shadowed=(
            _descriptors(cls)
            if setstate is None or isinstance(setstate, _types.FunctionType)
            else frozenset()
        ),
        slots=slots,
        restricted_slots=tuple(sorted(set(restricted))),
        list_items_ok=getattr(cls, "extend", None) is list.extend,
        dict_items_ok=getattr(cls, "__setitem__", None) is dict.__setitem__,
        heap=bool(cls.__flags__ & (1 << 9)),
    )
    _plans[cls] = plan
    return plan


def check_callable_value(value: Any, allowed: frozenset[str], where: str, fail: Any) -> None:
    """A callable slot holds a function trusted by name, a partial of one, None, a
    string, a number, an array, or a list/tuple/dict of those; an instance of a
    class only if its exact class is in ``allowed`` (scorers)."""
    stack = [value]
    seen = 0
    while stack:
        v = stack.pop()
        seen += 1
        if seen > 100_000:
            raise fail(f"{where} holds too many values")
        t = type(v)
        if v is None or t in (str, bool, int, float, bytes) or isinstance(v, np.generic):
            continue
        if t is np.ndarray:
            if v.dtype.kind == "O":
                raise fail(f"{where} holds an object array, not a function or data")
            continue
        if _is_function(v):
            continue
        if t is functools.partial:
            stack.append(v.func)
            continue
        if t in (list, tuple):
            stack.extend(v)
            continue
        if t is dict:
            stack.extend(v.values())
            continue
        if _qual(t) in allowed:
            continue
        kind = "a class" if isinstance(v, type) else f"an instance of {_qual(t)}"
        raise fail(
            f"{where} is called by the model, but the file puts {kind} there, not a "
            "function trusted by name (crafted file?)"
        )


def check_names(plan: ClassPlan, names: Any, fail: Any) -> None:
    """No attribute of a state may stand in for a method or property of the class."""
    shadowing = plan.shadowed.intersection(names)
    if shadowing:
        raise fail(
            f"the state of {plan.name} sets {sorted(shadowing)}, which would stand in for "
            "its methods or properties (crafted file?)"
        )


def _check_state(plan: ClassPlan, state: Any, fail: Any, *, names_checked: bool) -> None:
    """The rules that hold for every state, whatever the class."""
    attrs = state
    if type(state) is tuple and len(state) == 2 and isinstance(state[0], dict | None):
        attrs = {**(state[0] or {}), **(state[1] if type(state[1]) is dict else {})}
    if type(attrs) is not dict:
        return
    if not names_checked:
        check_names(plan, attrs, fail)
    for slot, allowed in plan.slots.items():
        if slot in attrs:
            check_callable_value(attrs[slot], allowed, f"{plan.name}.{slot}", fail)


def check_methods_allowed(plan: ClassPlan, policy: TrustPolicy, fail: Any) -> None:
    """A custom ``__setstate__`` or ``__new__`` runs only if it is reviewed
    (:func:`.registry.register_reviewed`) or the class was trusted by name by the caller."""
    for method, owner in (("__setstate__", plan.setstate_owner), ("__new__", plan.new_owner)):
        if owner is None or reviewed(method, owner):
            continue
        if policy.trusted_by_caller(plan.name) or policy.trusted_by_caller(owner):
            continue
        raise fail(
            f"{plan.name} has a {method} ({owner}) that safepoint has not reviewed: "
            "refused (trust the class by name if you know what it does)"
        )


def build(
    ctx: ConstructionContext,
    cls: type,
    kind: str,
    args: list[Any],
    state: Any,
    *,
    list_items: list[Any] | None = None,
    dict_items: dict[Any, Any] | None = None,
    plan: ClassPlan | None = None,
    migrated: bool = False,
    validated: bool = False,
    names_checked: bool = False,
    slots_checked: bool = False,
    methods_checked: bool = False,
) -> Any:
    """Build one instance of the audited class ``cls`` from decoded parts.

    For object tables, which settle per-class work once for many objects:
    ``migrated`` (the migrations ran), ``validated`` (a table validator checked
    every object at once), ``names_checked`` (no attribute name shadows a method:
    every object of the table has the same names), ``slots_checked`` (every
    callable slot of the state was checked, column by column, with names_checked),
    ``methods_checked`` (:func:`check_methods_allowed` passed for ``plan`` and
    this policy).
    """
    plan = plan or plan_for(cls)
    fail = ctx.fail
    if not migrated:
        for fn in migrations_of(plan.name):
            state = fn(state, ctx)  # type: ignore[arg-type]
    # before the validators, which may then compare and read the slots' values
    if not (slots_checked and names_checked):
        _check_state(plan, state, fail, names_checked=names_checked)
    if not validated:
        state = validate_chain(cls, args, state, ctx)  # type: ignore[arg-type]
    if not methods_checked:
        check_methods_allowed(plan, ctx.policy, fail)
    if kind == "pyx":
        obj = _pyx_unpickle(cls, plan, args, state, fail)
    else:
        if kind == "red":
            obj = cls(*args)
        elif args:
            raise fail(f"{plan.name} is built from its state only, not from arguments")
        elif state is None and not plan.heap:
            # a compiled structure without its state would be used uninitialised
            raise fail(f"{plan.name} is compiled and must be given exactly one state")
        else:
            obj = cls.__new__(cls)  # type: ignore[call-overload]
        if state is not None:
            if plan.setstate is not None:
                plan.setstate(obj, state)
            else:
                set_state(obj, state, fail)
    if list_items is not None:
        if not plan.list_items_ok:
            raise fail(f"{plan.name} does not take list items")
        list.extend(obj, list_items)
    if dict_items is not None:
        if not plan.dict_items_ok:
            raise fail(f"{plan.name} does not take dict items")
        for k, v in dict_items.items():
            dict.__setitem__(obj, k, v)
    ctx.record(obj, plan, args, state)
    return obj


def _pyx_unpickle(cls: type, plan: ClassPlan, args: list[Any], state: Any, fail: Any) -> Any:
    import importlib

    if len(args) != 1 or type(args[0]) is not int:
        raise fail("a Cython state needs its checksum")
    unpickle = getattr(
        importlib.import_module(cls.__module__), f"__pyx_unpickle_{cls.__name__}", None
    )
    if unpickle is None:
        raise fail(f"{plan.name} has no Cython unpickler in this version")
    return unpickle(cls, args[0], state)


def set_state(obj: Any, state: Any, fail: Callable[[str], Exception]) -> None:
    """What pickle's BUILD opcode does for a class without ``__setstate__``: the
    state's attributes go into the instance dict (and slots), by assignment."""
    if state is None:
        return
    slotstate = None
    if isinstance(state, tuple) and len(state) == 2:
        state, slotstate = state
    if state:
        if type(state) is not dict:
            raise fail(f"the state of {type(obj).__qualname__} must be a dict")
        inst_dict = obj.__dict__
        for k, v in state.items():
            if type(k) is not str:
                raise fail("attribute names must be strings")
            inst_dict[k] = v
    if slotstate:
        if type(slotstate) is not dict:
            raise fail("slot state must be a dict")
        for k, v in slotstate.items():
            if type(k) is not str:
                raise fail("attribute names must be strings")
            # a slot is a member descriptor of the class: set it without the
            # instance's own __setattr__
            object.__setattr__(obj, k, v)
