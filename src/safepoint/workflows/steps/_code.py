"""The code a step reaches in the user's own modules, and the packages it stops at.

A step's own source is only part of what it computes: it calls helper functions,
instantiates the user's classes and reads module-level constants. This module
follows those references from the step's function, transitively, and fingerprints
each thing it reaches:

* a function or class of the user's own modules: its normalised source (comments,
  formatting and docstrings do not count), keyed ``module.qualname``
  (``helpers.scale``); then what *it* refers to, and so on;
* a module-level value a reached function reads (a constant, a dict, an array,
  an estimator): a digest of the value (``helpers.FACTOR``);
* anything of an installed package or of the standard library: not followed, its
  distribution's version is recorded instead (``numpy`` -> ``2.1.0``,
  ``python`` -> ``3.11``);
* what cannot be followed (compiled code in the user's folder, ``eval``, an import
  of a module that is not installed) is listed as *unchecked*, so that a status
  never claims it unchanged.

"The user's own modules" are those loaded from anywhere but the standard library
and the site-packages folders: a script, a notebook (``__main__``), a module beside
it, a package installed in editable mode.

References are found in the source (``symtable`` says which names are global;
attribute chains such as ``helpers.scale`` or ``self.threshold`` are resolved one
step at a time), so a lookup by a computed name (``getattr(mod, name)``) is not
seen; see docs/steps.md for the limits.

>>> deps = step_dependencies(step_dependencies)
>>> sorted(deps.packages)[:1]
['python']
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import functools
import importlib.util
import inspect
import os
import site
import symtable
import sys
import sysconfig
import textwrap
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._fingerprint import fingerprint
from ..fingerprint import code_fingerprint

__all__ = ["CodeDeps", "module_kind", "step_dependencies"]

#: calls whose target is computed at run time: the code they reach is not followed
_DYNAMIC_CALLS = {"eval", "exec", "__import__", "import_module", "compile"}
#: instance attributes every workflow object has (set by safepoint, not by the user)
_WORKFLOW_ATTRS = {"name", "version", "store", "trusted", "_params", "_active_params",
                   "_registered", "_code"}  # fmt: skip
#: suffixes of compiled extension modules
_COMPILED = (".so", ".pyd", ".dylib")


@dataclass
class CodeDeps:
    """What a step's code reaches: fingerprints by name, package versions, blind spots."""

    code: dict[str, str] = field(default_factory=dict)
    packages: dict[str, str] = field(default_factory=dict)
    unchecked: list[str] = field(default_factory=list)

    def to_record(self) -> dict[str, Any]:
        return {
            "code": dict(sorted(self.code.items())),
            "packages": dict(sorted(self.packages.items())),
            "unchecked": sorted(set(self.unchecked)),
        }


# -- where a module comes from ------------------------------------------------------------
@functools.cache
def _site_dirs() -> tuple[str, ...]:
    dirs = set()
    for key in ("purelib", "platlib"):
        with _suppress():
            dirs.add(sysconfig.get_paths()[key])
    with _suppress():
        dirs.update(site.getsitepackages())
    with _suppress():
        dirs.add(site.getusersitepackages())
    return tuple(sorted(os.path.realpath(d) + os.sep for d in dirs if d))


@functools.cache
def _stdlib_dirs() -> tuple[str, ...]:
    dirs = set()
    for key in ("stdlib", "platstdlib"):
        with _suppress():
            dirs.add(sysconfig.get_paths()[key])
    return tuple(sorted(os.path.realpath(d) + os.sep for d in dirs if d))


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> bool:
        return exc[0] is not None and issubclass(exc[0], Exception)


def _module_file(module: types.ModuleType) -> str | None:
    path = getattr(module, "__file__", None)
    if isinstance(path, str) and path:
        return os.path.realpath(path)
    paths = getattr(module, "__path__", None)  # a namespace package
    if paths:
        with _suppress():
            return os.path.realpath(next(iter(paths)))
    return None


def module_kind(module: types.ModuleType) -> str:
    """``"user"``, ``"stdlib"`` or ``"package"`` (safepoint itself is a package).

    Example:
        >>> import json
        >>> module_kind(json)
        'stdlib'
    """
    name = getattr(module, "__name__", "") or ""
    top = name.partition(".")[0]
    if top == "safepoint":
        return "package"
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return "stdlib"
    path = _module_file(module)
    if path is None:
        # no file: a notebook's __main__, or a module built in memory (user code)
        return "user"
    if path.startswith(_site_dirs()):
        return "package"
    if path.startswith(_stdlib_dirs()):
        return "stdlib"
    return "user"


def module_label(module: types.ModuleType | None, name: str | None = None) -> str:
    """How a module is named in explanations: a script run as ``__main__`` (or loaded
    by the CLI under a private name) is named after its file, so that both agree."""
    name = name or getattr(module, "__name__", None) or "?"
    if name == "__main__" or name.startswith("_safepoint_workflow_"):
        path = getattr(module, "__file__", None) if module is not None else None
        if isinstance(path, str) and path:
            return os.path.splitext(os.path.basename(path))[0]
        return "__main__"
    return name


@functools.cache
def _distributions() -> Mapping[str, list[str]]:
    import importlib.metadata as md

    try:
        return md.packages_distributions()
    except Exception:  # a broken installation must not stop a workflow
        return {}


@functools.cache
def package_version(top: str) -> tuple[str, str] | None:
    """``(label, version)`` of the distribution that installs module ``top``, or None."""
    import importlib.metadata as md

    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return "python", "{}.{}".format(*sys.version_info[:2])
    for dist in _distributions().get(top, []):
        with _suppress():
            return dist, md.version(dist)
    module = sys.modules.get(top)
    version = getattr(module, "__version__", None)
    if isinstance(version, str):
        return top, version
    return None


# -- the walk -------------------------------------------------------------------------------
def _source_tree(obj: Any) -> tuple[str, ast.AST] | None:
    """The dedented source of ``obj`` and its parsed definition (None without source)."""
    if getattr(obj, "__name__", "") == "<lambda>":
        return None
    try:
        source = textwrap.dedent(inspect.getsource(obj))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            # a file edited since the import holds other code at that line: not this one
            return (source, node) if node.name == obj.__name__ else None
    return None


def _global_names(source: str) -> set[str]:
    """Names that the code in ``source`` reads from its module (or builtins)."""
    try:
        top = symtable.symtable(source, "<step>", "exec")
    except SyntaxError:
        return set()
    names: set[str] = set()

    def visit(table: symtable.SymbolTable, module_level: bool) -> None:
        for sym in table.get_symbols():
            if (module_level and sym.is_referenced()) or (not module_level and sym.is_global()):
                names.add(sym.get_name())
        for child in table.get_children():
            visit(child, False)

    visit(top, True)
    return names


def _chains(node: ast.AST) -> Iterator[tuple[str, ...]]:
    """The longest ``Name(.attr)*`` chains read in ``node``: ``helpers.scale`` gives
    ("helpers", "scale") only, not also ("helpers",)."""
    stack: list[ast.AST] = [node]
    while stack:
        sub = stack.pop()
        if isinstance(sub, ast.Attribute):
            parts: list[str] = []
            cur: ast.AST = sub
            while isinstance(cur, ast.Attribute):
                parts.append(cur.attr)
                cur = cur.value
            if isinstance(cur, ast.Name):
                yield (cur.id, *reversed(parts))
            else:
                stack.append(cur)  # f(x).attr: what is inside the call
            continue
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
            yield (sub.id,)
        stack.extend(ast.iter_child_nodes(sub))


def _dynamic_calls(node: ast.AST) -> list[str]:
    found = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            f = sub.func
            name = f.id if isinstance(f, ast.Name) else getattr(f, "attr", "")
            if name in _DYNAMIC_CALLS:
                found.append(name)
    return found


def _local_imports(node: ast.AST, package: str | None) -> list[tuple[str, str, str | None]]:
    """``(bound name, module, attribute or None)`` for imports inside a function."""
    found: list[tuple[str, str, str | None]] = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Import):
            for alias in sub.names:
                if alias.asname:
                    found.append((alias.asname, alias.name, None))
                else:
                    top = alias.name.partition(".")[0]
                    found.append((top, top, None))
        elif isinstance(sub, ast.ImportFrom):
            base = sub.module or ""
            if sub.level:
                with _suppress():
                    base = importlib.util.resolve_name("." * sub.level + base, package or "")
            for alias in sub.names:
                if alias.name != "*":
                    found.append((alias.asname or alias.name, base, alias.name))
    return found


def _is_data(value: Any) -> bool:
    """Values whose content decides what a step computes (compared by digest)."""
    if isinstance(value, type | types.ModuleType):
        return False
    if value is None or isinstance(
        value, bool | int | float | complex | str | bytes | tuple | list | dict | set | frozenset
    ):
        return True
    if dataclasses.is_dataclass(value) or isinstance(value, types.SimpleNamespace):
        return True
    mod = type(value).__module__.partition(".")[0]
    if mod in ("numpy", "pandas", "scipy"):
        return True
    if hasattr(value, "get_params") and callable(value.get_params):
        return True
    # a library object without a state of its own (a path, a date, a compiled pattern)
    # is its repr; one with a __dict__ (a logger, a lock, a session) is not data
    if hasattr(value, "__dict__"):
        return False
    try:
        return " at 0x" not in repr(value)
    except Exception:
        return False


class _Walker:
    """Follows references from one step; see the module docstring."""

    def __init__(self, owner: Any = None) -> None:
        self.deps = CodeDeps()
        self.owner = owner  # the workflow object (``self`` of a step method)
        self._seen: set[int] = set()

    # -- entry points -----------------------------------------------------------------
    def step(self, func: Callable[..., Any]) -> None:
        """The step itself: its own code is compared apart; follow what it refers to
        (not its decorators: they say how the step is registered, not what it does)."""
        self._seen.add(id(func))
        self._references(func, self_param=self.owner is not None, decorators=False)

    def _unchecked(self, text: str) -> None:
        if text not in self.deps.unchecked:
            self.deps.unchecked.append(text)

    def _package(self, module_name: str) -> None:
        top = (module_name or "").partition(".")[0]
        if not top:
            return
        found = package_version(top)
        if found is None:
            self._unchecked(f"{top}: an installed module whose version is unknown")
        else:
            self.deps.packages[found[0]] = found[1]

    # -- objects ----------------------------------------------------------------------
    def obj(self, label: str, value: Any) -> None:
        """Whatever a reference resolved to: code, a module, a value."""
        if isinstance(value, types.ModuleType):
            self.module(value)
        elif isinstance(value, staticmethod | classmethod):
            self.obj(label, value.__func__)
        elif isinstance(value, property):
            for part in (value.fget, value.fset):
                if part is not None:
                    self.obj(label, part)
        elif isinstance(value, types.MethodType):
            self.obj(label, value.__func__)
            if not isinstance(value.__self__, type):
                self.value(label, value.__self__)
        elif isinstance(value, functools.partial):
            self.obj(label, value.func)
            self.value(label, (value.args, value.keywords))
        elif isinstance(value, types.FunctionType):
            self.function(value, label)
        elif isinstance(value, type):
            self.klass(value)
        elif isinstance(value, types.BuiltinFunctionType | types.BuiltinMethodType):
            self.builtin(label, value)
        elif callable(value) and hasattr(value, "__code__") and not isinstance(value, type):
            self.function(value, label)  # a function-like object (a compiled cyfunction has none)
        else:
            self.value(label, value)

    def _where(self, obj: Any) -> tuple[types.ModuleType | None, str]:
        name = getattr(obj, "__module__", None)
        module = sys.modules.get(name) if isinstance(name, str) else None
        return module, name if isinstance(name, str) else ""

    def module(self, module: types.ModuleType, whole: bool = True) -> None:
        kind = module_kind(module)
        if kind != "user":
            self._package(module.__name__)
            return
        if not whole or id(module) in self._seen:
            return
        self._seen.add(id(module))
        # the module is used as a whole (passed along, attributes looked up by name):
        # its file is the fingerprint
        self._file(module_label(module), _module_file(module))

    def _file(self, label: str, path: str | None) -> None:
        import xxhash

        if path is None or not os.path.isfile(path):
            self._unchecked(f"{label}: a module without a file")
            return
        with open(path, "rb") as fh:
            digest = xxhash.xxh3_128_hexdigest(fh.read())
        self.deps.code[f"{label} (file)"] = f"file:{digest}"
        if path.endswith(_COMPILED):
            self._unchecked(
                f"{label}: compiled code (its file is compared, not what it calls or reads)"
            )

    def builtin(self, label: str, func: Any) -> None:
        owner = getattr(func, "__self__", None)
        module = owner if isinstance(owner, types.ModuleType) else self._where(func)[0]
        if module is None:
            if isinstance(owner, type):
                module = sys.modules.get(owner.__module__)
            if module is None:
                self._unchecked(f"{label}: compiled code of unknown origin")
                return
        if module_kind(module) == "user":
            self._file(module_label(module), _module_file(module))
        else:
            self._package(module.__name__)

    def function(self, func: Any, label: str = "", self_param: bool = False) -> None:
        if id(func) in self._seen:
            return
        self._seen.add(id(func))
        module, modname = self._where(func)
        if module is not None and module_kind(module) != "user":
            self._package(modname)
            return
        wrapped = getattr(func, "__wrapped__", None)
        if wrapped is not None:
            self.obj(getattr(wrapped, "__qualname__", "?"), wrapped)
        qualname = getattr(func, "__qualname__", "?")
        key = f"{module_label(module, modname)}.{qualname}"
        if qualname.endswith("<lambda>") and label:
            key = label  # lambdas are told apart by the name that holds them
        try:
            self.deps.code[key] = _helper_fingerprint(func)
        except Exception:
            self._unchecked(f"{key}: its code cannot be read")
            return
        self._references(func, self_param=self_param)

    def klass(self, cls: type) -> None:
        for base in cls.__mro__:
            if id(base) in self._seen or base is object:
                continue
            self._seen.add(id(base))
            module, modname = self._where(base)
            if module is None or module_kind(module) != "user":
                if modname not in ("builtins", ""):
                    self._package(modname)
                continue
            key = f"{module_label(module, modname)}.{base.__qualname__}"
            parsed = _source_tree(base)
            if parsed is None:
                # no source: each method's bytecode and each class attribute
                for name, attr in sorted(vars(base).items()):
                    if not name.startswith("__") or name in ("__init__", "__call__"):
                        self.obj(f"{key}.{name}", attr)
                continue
            source, node = parsed
            self.deps.code[key] = _tree_digest(node)
            self._resolve_refs(source, node, getattr(module, "__dict__", {}), {}, key)

    def value(self, label: str, value: Any) -> None:
        cls = type(value)
        module, modname = self._where(cls)
        user_class = module is not None and module_kind(module) == "user"
        if not user_class and (callable(value) or not _is_data(value)):
            if modname not in ("builtins", ""):
                self._package(modname)  # a library object: its package, not its state
            return
        if user_class:
            self.klass(cls)
        try:
            self.deps.code[label] = "value:" + _value_digest(value)
        except Exception as exc:  # a value whose state cannot be read
            self._unchecked(f"{label}: its value cannot be digested ({type(exc).__name__})")

    # -- references ---------------------------------------------------------------------
    def _references(self, func: Any, self_param: bool, decorators: bool = True) -> None:
        func = inspect.unwrap(func) if hasattr(func, "__wrapped__") else func
        module, modname = self._where(func)
        namespace = getattr(func, "__globals__", None)
        if namespace is None:
            namespace = getattr(module, "__dict__", {})
        closure = _closure(func)
        label = f"{module_label(module, modname)}.{getattr(func, '__qualname__', '?')}"
        parsed = _source_tree(func)
        if parsed is None:
            self._bytecode_references(func, namespace, closure, label)
            return
        source, node = parsed
        if not decorators and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            node.decorator_list = []
        self_name = None
        if self_param and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args.posonlyargs + node.args.args
            self_name = args[0].arg if args else None
        self._resolve_refs(source, node, namespace, closure, label, self_name)

    def _resolve_refs(
        self,
        source: str,
        node: ast.AST,
        namespace: Mapping[str, Any],
        closure: Mapping[str, Any],
        label: str,
        self_name: str | None = None,
    ) -> None:
        # closure variables look global in the function's source read alone
        globals_ = _global_names(source)
        package = namespace.get("__package__") if isinstance(namespace, Mapping) else None
        imports = {}
        for bound, modname, attr in _local_imports(node, package):
            imports[bound] = (modname, attr)
        for call in sorted(set(_dynamic_calls(node))):
            self._unchecked(f"{label} calls {call}(): the code it reaches is not followed")
        for chain in sorted(set(_chains(node))):
            root = chain[0]
            if self_name is not None and root == self_name:
                if len(chain) > 1:
                    self._attribute_of_owner(chain[1])
            elif root in imports:
                self._imported(label, *imports[root], chain[1:])
            elif root in closure:
                self._chain(f"{label}.{root}", closure[root], chain[1:])
            elif root in globals_ and root in namespace:
                # (not in the namespace: a builtin, or a name the module lacks)
                where = module_label(_module_of(namespace))
                self._chain(f"{where}.{root}", namespace[root], chain[1:])

    def _bytecode_references(
        self, func: Any, namespace: Mapping[str, Any], closure: Mapping[str, Any], label: str
    ) -> None:
        code = getattr(func, "__code__", None)
        if code is None:
            self._unchecked(f"{label}: its code cannot be read")
            return
        names: set[str] = set()
        stack = [code]
        while stack:
            c = stack.pop()
            names.update(c.co_names)
            stack.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
        mod_label = module_label(_module_of(namespace))
        for name in sorted(names):
            if name in namespace and not hasattr(builtins, name):
                value = namespace[name]
                if isinstance(value, types.ModuleType):
                    self.module(value, whole=True)
                else:
                    self.obj(f"{mod_label}.{name}", value)
        for name, value in sorted(closure.items()):
            self.obj(f"{label}.{name}", value)

    def _chain(self, label: str, value: Any, attrs: tuple[str, ...]) -> None:
        """Resolve ``value.attr1.attr2...`` as far as modules go, then take the object."""
        for i, attr in enumerate(attrs):
            if not isinstance(value, types.ModuleType):
                break
            if module_kind(value) != "user":
                self._package(value.__name__)
                return
            if attr not in vars(value):
                # a submodule not imported yet, or a dynamic attribute: the whole module
                self.module(value, whole=True)
                return
            label = f"{module_label(value)}.{attr}"
            value = vars(value)[attr]
            if i == len(attrs) - 1:
                break
        self.obj(label, value)

    def _imported(self, label: str, modname: str, attr: str | None, rest: tuple[str, ...]) -> None:
        module = sys.modules.get(modname)
        if module is None:
            self._not_imported(label, modname)
            return
        if attr is None:
            self._chain(module_label(module), module, rest)
        elif attr in vars(module):
            self._chain(f"{module_label(module)}.{attr}", vars(module)[attr], rest)
        elif f"{modname}.{attr}" in sys.modules:
            self._chain(f"{modname}.{attr}", sys.modules[f"{modname}.{attr}"], rest)
        else:
            self.module(module, whole=True)

    def _not_imported(self, label: str, modname: str) -> None:
        """An import inside a step of a module not loaded yet: found without running it."""
        top = modname.partition(".")[0]
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            spec = None
        origin = getattr(spec, "origin", None) if spec is not None else None
        if spec is None:
            self._unchecked(f"{label} imports {modname}, which is not installed")
            return
        if top in sys.stdlib_module_names or origin in (None, "built-in", "frozen"):
            self._package(top)
            return
        real = os.path.realpath(origin)
        if real.startswith(_site_dirs()):
            self._package(top)
        elif modname == top:
            self._file(modname, real)
        else:
            self._unchecked(f"{label} imports {modname}, not loaded yet: only {top} is compared")
            self._file(top, real)

    def _attribute_of_owner(self, attr: str) -> None:
        owner = self.owner
        if owner is None:
            return
        cls = type(owner)
        module = sys.modules.get(cls.__module__)
        cls_label = f"{module_label(module, cls.__module__)}.{cls.__qualname__}"
        try:
            found = inspect.getattr_static(cls, attr)
        except AttributeError:
            instance = vars(owner) if hasattr(owner, "__dict__") else {}
            if attr in instance and attr not in _WORKFLOW_ATTRS:
                self.obj(f"{cls_label}.{attr}", instance[attr])
            return
        for klass in cls.__mro__:
            if attr in vars(klass):
                module = sys.modules.get(klass.__module__)
                if module is None or module_kind(module) != "user":
                    return  # safepoint's own attributes (params, store, ...) or a library's
                break
        if isinstance(found, types.FunctionType):
            # another method of the workflow: its own self.* reads are followed too
            self.function(found, f"{cls_label}.{attr}", self_param=True)
        else:
            self.obj(f"{cls_label}.{attr}", found)


def _module_of(namespace: Mapping[str, Any]) -> types.ModuleType | None:
    name = namespace.get("__name__") if isinstance(namespace, Mapping) else None
    module = sys.modules.get(name) if isinstance(name, str) else None
    if module is not None and getattr(module, "__dict__", None) is namespace:
        return module
    fake = types.ModuleType(name if isinstance(name, str) else "?")
    fake.__file__ = namespace.get("__file__")
    return fake


def _closure(func: Any) -> dict[str, Any]:
    code = getattr(func, "__code__", None)
    cells = getattr(func, "__closure__", None) or ()
    if code is None:
        return {}
    found = {}
    for name, cell in zip(code.co_freevars, cells, strict=False):
        try:
            found[name] = cell.cell_contents
        except ValueError:  # an empty cell (not assigned yet)
            continue
    found.pop("__class__", None)  # super(): the class itself is followed by its methods
    return found


def _value_digest(value: Any) -> str:
    if hasattr(value, "get_params") and hasattr(value, "__dict__"):
        # an estimator: its fitted state too, not only its parameters
        return fingerprint((type(value), vars(value)))
    return fingerprint(value)


def _tree_digest(node: ast.AST) -> str:
    import hashlib

    from ..fingerprint import _Normaliser

    node = _Normaliser().visit(node)
    dumped = ast.dump(node, annotate_fields=True, include_attributes=False)
    return "ast:" + hashlib.blake2b(dumped.encode(), digest_size=16).hexdigest()


def _helper_fingerprint(func: Any) -> str:
    """A helper's fingerprint: its source including decorators (``@lru_cache``, ``@njit``
    change what it computes), else its bytecode."""
    parsed = _source_tree(func)
    if parsed is not None:
        return _tree_digest(parsed[1])
    return code_fingerprint(func)


def step_dependencies(func: Callable[..., Any], owner: Any = None) -> CodeDeps:
    """Everything the step function ``func`` reaches (see the module docstring).

    ``owner`` is the workflow object when the step is a method: ``self.helper()`` and
    ``self.threshold`` are then followed too.

    Example:
        >>> def step(outputs):
        ...     return sorted(outputs)
        >>> step_dependencies(step).code
        {}
    """
    walker = _Walker(owner)
    walker.step(func)
    return walker.deps
