"""The trust policy: which (module, qualname) a file may name, and how they are resolved.

The default trust set (docs/security.md explains each part):

* scikit-learn's public estimators, and only the internal types fitted models
  really hold (trees, neighbour indices, losses, bin mappers, ...), each with
  the node kinds that may build it and a written reason, in
  :mod:`safepoint.format.sklearn.trust_table` (a reviewed list, never "every class
  in the package"), and whatever else registered a trust rule
  (:func:`safepoint.format.registry.register_trust_rule`: the framework adapters'
  classes, safepoint's own estimators);
* as *references only* (a value that is a function or class, never called at
  load): scikit-learn's scoring, distance and kernel functions, numpy ufuncs and
  scalar types, scipy.special ufuncs, a few pure numpy reductions, and builtin
  types such as ``float``.

Numpy, scipy.sparse and pandas objects do not appear here: their handlers build
them from data without naming a class.

Anything else must be trusted by the caller, by exact name. There is no
"trust everything" switch.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Iterable
from typing import Any

from .._types import Trusted
from ..errors import FormatError, TrustArgumentError
from .registry import replaced_type, trusted_by_rules

__all__ = ["TrustPolicy", "type_name"]

_NUMPY_FUNCTIONS = frozenset(
    {
        "mean",
        "median",
        "sum",
        "prod",
        "std",
        "var",
        "min",
        "max",
        "amin",
        "amax",
        "nanmean",
        "nanmedian",
        "nansum",
        "nanstd",
        "nanvar",
        "nanmin",
        "nanmax",
        "average",
        "ptp",
        "percentile",
        "quantile",
        "nanpercentile",
        "nanquantile",
        "clip",
        "round",
        "abs",
        "argmax",
        "argmin",
        "cumsum",
        "diff",
        "ravel",
        "asarray",
        "array",
        "atleast_2d",
        "column_stack",
        "hstack",
        "vstack",
        "transpose",
    }
)
_BUILTIN_TYPES = frozenset(
    {
        "int",
        "float",
        "str",
        "bool",
        "complex",
        "bytes",
        "list",
        "dict",
        "tuple",
        "set",
        "frozenset",
        "object",
        "slice",
        "range",
        "bytearray",
    }
)
_OBJ_KINDS = ("obj", "red", "pyx")


def type_name(module: str, qualname: str) -> str:
    return f"{module}.{qualname}"


def _normalize(trusted: Trusted) -> frozenset[str]:
    if trusted is None:
        return frozenset()
    if isinstance(trusted, str | type):
        trusted = [trusted]
    out = set()
    for t in trusted:
        if isinstance(t, str):
            if not t or any(c.isspace() for c in t) or "<" in t:
                raise TrustArgumentError(f"{t!r} is not a type name like 'mypkg.module.Class'")
            out.add(t)
        elif isinstance(t, tuple) and len(t) == 2 and all(isinstance(x, str) for x in t):
            out.add(type_name(*t))
        elif hasattr(t, "__module__") and hasattr(t, "__qualname__"):
            out.add(type_name(t.__module__, t.__qualname__))
        else:
            raise TrustArgumentError(
                f"trusted= takes type names ('pkg.mod.Class'), (module, qualname) pairs or "
                f"classes/functions; got {t!r}"
            )
    return frozenset(out)


class TrustPolicy:
    """Decides, without importing anything, whether a types-table row is allowed."""

    def __init__(self, trusted: Trusted = ()) -> None:
        self.extra = _normalize(trusted)

    def trusted_by_caller(self, name: str) -> bool:
        """Whether the caller named ``name`` in ``trusted=`` (their decision, which
        also lifts the review rules for that class)."""
        return name in self.extra

    def is_trusted(self, module: str, qualname: str, kind: str) -> bool:
        name = type_name(module, qualname)
        if name in self.extra:
            return True
        if kind == "adapter":
            # a framework class rebuilt by its adapter from the framework's own
            # non-executable format (xgboost UBJSON, ...): only the classes the adapters
            # list (their trust rule); nothing else may name an adapter node
            return trusted_by_rules(module, qualname, kind)
        if kind != "ref" and replaced_type(module, qualname, kind) is not None:
            # a removed class that safepoint's own migration rebuilds without importing it
            return True
        if trusted_by_rules(module, qualname, kind):
            # the reviewed scikit-learn table, safepoint's own estimators, ...
            return True
        if kind != "ref" or "." in qualname:
            return False
        if module == "builtins":
            return qualname in _BUILTIN_TYPES
        if module == "numpy":
            if qualname in _NUMPY_FUNCTIONS:
                return True
            import numpy as np

            obj = getattr(np, qualname, None)
            return isinstance(obj, np.ufunc) or (
                isinstance(obj, type) and issubclass(obj, np.generic)
            )
        if module == "scipy.special":
            import numpy as np

            try:
                sc = importlib.import_module("scipy.special")
            except ImportError:
                return False
            return isinstance(getattr(sc, qualname, None), np.ufunc)
        return False

    def untrusted(self, types: Iterable[tuple[str, str, str]]) -> list[str]:
        rows = tuple(types)
        key = (self.extra, rows)
        if key in _AUDITED:
            return []
        bad = sorted({type_name(m, q) for m, q, k in rows if not self.is_trusted(m, q, k)})
        if not bad and len(rows) <= 256 and len(_AUDITED) < _AUDITED_MAX:
            # a process loads files of a few types tables again and again (a scoring
            # job, a store's versions): a table found fully trusted under the same
            # trusted= names is trusted again. Only that outcome is kept: the rules
            # only widen while a process runs (an adapter registering its types), so a
            # kept "trusted" stays true, while a refusal is worked out afresh each time.
            # Bounded: at most _AUDITED_MAX tables of at most 256 rows are kept
            _AUDITED.add(key)
        return bad


#: (caller's trusted names, types table) pairs audited as fully trusted in this process
_AUDITED: set[tuple[frozenset[str], tuple[tuple[str, str, str], ...]]] = set()
_AUDITED_MAX = 1024


@functools.lru_cache(maxsize=64)
def default_policy(trusted: frozenset[str] | tuple[()] = ()) -> TrustPolicy:
    """The policy for ``trusted=`` names that are hashable (the default ``()``): one
    per process instead of one per load."""
    return TrustPolicy(trusted)


def resolve(module: str, qualname: str, kind: str) -> Any:
    """Import an (already audited) name and check it is exactly what was named."""
    replaced = replaced_type(module, qualname, kind) if kind != "ref" else None
    if replaced is not None:
        return replaced
    obj: Any = sys.modules.get(module)
    try:
        if obj is None or getattr(getattr(obj, "__spec__", None), "_initializing", False):
            # not imported yet (or being imported by another thread: import_module
            # waits for it); an imported module is taken as import_module would
            # return it, without its Python frames
            obj = importlib.import_module(module)
    except ImportError as exc:
        raise FormatError(
            f"the file needs {type_name(module, qualname)}, but module {module!r} cannot be "
            f"imported here ({exc}): install the package the model was trained with"
        ) from None
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise FormatError(
                f"the file needs {type_name(module, qualname)}, which does not exist in the "
                "installed version of its package (renamed or removed): install the version "
                "the model was written with (see `safepoint inspect`)"
            ) from None
    if kind in _OBJ_KINDS and not isinstance(obj, type):
        raise FormatError(f"{type_name(module, qualname)} is not a class")
    import numpy as np

    if isinstance(obj, np.ufunc):
        if obj.__name__ != qualname:
            raise FormatError(f"{type_name(module, qualname)} is an alias of {obj.__name__}")
        return obj
    own_module = str(getattr(obj, "__module__", None))
    # a compiled class reporting its bare extension name (scikit-learn < 1.8:
    # sklearn._loss._loss.CyHalfSquaredError says "_loss") is found where it lives
    bare_extension = "." not in own_module and module.endswith("." + own_module)
    # a name reached through another module's namespace (e.g. sklearn.base.os.system)
    if (
        (own_module != module or getattr(obj, "__qualname__", None) != qualname)
        and not (kind == "ref" and module in ("builtins", "numpy"))
        and not (bare_extension and getattr(obj, "__qualname__", None) == qualname)
    ):
        raise FormatError(
            f"{type_name(module, qualname)} resolves to an object defined elsewhere "
            f"({getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', '?')}): refused"
        )
    return obj
