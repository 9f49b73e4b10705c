"""A load-time guard: defence in depth under the pure loading of the format.

Pure construction (:mod:`.construction`) means no code from a file runs during a
load. Should a bug or an unforeseen gadget break that, this guard still stops
what a payload needs: while a load, ``verify``, ``convert``, ``scan`` or an
adapter's loader runs, a process-wide audit hook (:func:`sys.addaudithook`)
refuses every event that loading a model never needs:

* network: ``socket.*``;
* processes: ``subprocess.Popen``, ``os.system``, ``os.exec*``, ``os.spawn*``,
  ``os.posix_spawn*``, ``os.fork``/``forkpty``, ``os.kill``, ``pty.spawn``;
* code: ``exec``, ``compile``, ``code.__new__``, ``function.__new__``,
  ``marshal.loads``, ``pickle.find_class``, ``builtins.input``, ``ctypes.*``
  (all allowed while an allowed module is being imported: that is how Python
  imports);
* writes: ``open`` for writing (any mode with ``w``, ``a``, ``x`` or ``+``,
  or write/create flags), ``os.remove``/``unlink``/``rename``/``rmdir``/
  ``mkdir``/``chmod``/``chown``/``symlink``/``link``/``truncate``,
  ``shutil.*``;
* imports of a module outside the packages the file's audited types table names
  (and numpy, scipy, pandas, pyarrow, safepoint), unless a module being imported
  imports it (an allowed import pulling in its dependencies), or a module of a
  library the default trust set names (scikit-learn, the adapters' frameworks) or
  of the standard library imports it at run time. A class trusted only by the
  caller may import from its own package, nothing else.

Imports in progress are read off the stack above the frame that entered the
(outermost) guard only: below it is the caller's code, as it was before the load
began (a module that loads a model at import time is being imported there), and
nothing a load runs can add frames there.

The first refused event raises :class:`~safepoint.errors.LoadGuardError` where it
happens, and the guard remembers it: a payload that catches the exception still
makes the load fail when the guard closes.

The hook is installed once, on the first guarded operation (never at import of
safepoint), and it is active only inside a guard, through a context variable: in
any other thread or outside a load it returns at once (measured in
docs/benchmarks.md). Audit hooks cannot be removed; that is why it checks a
context variable and does nothing else when no guard is active.

An adapter whose framework loader needs more (Spark starts a JVM and talks to it
over a socket; XGBoost calls its library through ctypes) declares an
``allow`` set of event prefixes for its own loader, documented in
docs/security.md.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from ..errors import LoadGuardError

__all__ = ["Allowance", "Guarded", "Scope", "guarded", "in_temp_dir", "is_active", "to_loopback"]

#: event prefixes refused inside a guard (an event matches a prefix ending in "."
#: by prefix, any other exactly)
REFUSED: tuple[str, ...] = (
    "socket.",
    "subprocess.Popen",
    "os.system",
    "os.exec",
    "os.spawn",
    "os.posix_spawn",
    "os.fork",
    "os.forkpty",
    "os.kill",
    "os.killpg",
    "pty.spawn",
    "os.startfile",
    "exec",
    "compile",
    "code.__new__",
    "function.__new__",
    "marshal.loads",
    "marshal.load",
    "pickle.find_class",
    "builtins.input",
    "ctypes.",
    "os.remove",
    "os.unlink",
    "os.rename",
    "os.rmdir",
    "os.mkdir",
    "os.chmod",
    "os.chown",
    "os.symlink",
    "os.link",
    "os.truncate",
    "os.removexattr",
    "os.setxattr",
    "shutil.",
    "webbrowser.open",
    "sqlite3.connect",
    "urllib.Request",
)
#: events allowed while an (allowed) import is running: importing is compiling,
#: executing and unmarshalling a module's code (and caching it: __pycache__), and
#: module bodies build functions and load native libraries
_IMPORT_TIME = (
    "exec",
    "compile",
    "code.__new__",
    "function.__new__",
    "marshal.loads",
    "marshal.load",
    "ctypes.",
    "open",
    "os.mkdir",
    "os.rename",
    "os.chmod",
)
_EXACT = frozenset(p for p in REFUSED if not p.endswith("."))
_PREFIXES = tuple(p for p in REFUSED if p.endswith("."))
#: packages every load may import from (the format's own handlers build their types)
BASE_PACKAGES = frozenset({"numpy", "scipy", "pandas", "pyarrow", "safepoint"})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_IMPORTLIB_FILES = ("<frozen importlib._bootstrap>", "<frozen importlib._bootstrap_external>")
#: standard-library modules that import on behalf of their caller: the caller is the importer
_TRANSPARENT = frozenset({"importlib", "pkgutil", "runpy", "pydoc", "zipimport", "code", "codeop"})


#: an allowance: an event prefix (as in REFUSED), or a prefix with a predicate of the
#: event's arguments (``("pickle.find_class", lambda args: args[0].startswith(...))``)
Allowance = str | tuple[str, Callable[[tuple[Any, ...]], bool]]


def _allows(allow: Iterable[Allowance], event: str, args: tuple[Any, ...]) -> bool:
    for a in allow:
        prefix, test = (a, None) if isinstance(a, str) else a
        if (prefix.endswith(".") and event.startswith(prefix)) or event == prefix:
            try:
                if test is None or test(args):
                    return True
            except Exception:  # a predicate that cannot read the arguments: no
                continue
    return False


@dataclass
class Scope:
    """One guarded operation: what it is, what it may additionally do, which
    top-level packages it may import from, and the first event it refused."""

    what: str
    allow: tuple[Allowance, ...] = ()
    packages: frozenset[str] = BASE_PACKAGES
    #: packages of default-trusted libraries, whose code may import at run time
    libraries: frozenset[str] = BASE_PACKAGES
    refused: str | None = None
    events: list[str] = field(default_factory=list)
    #: imports in progress already checked, from the ``_find_and_load`` frame of one up
    #: to the end of the walk (``entry``, or the bottom of the stack), all allowed: that
    #: frame -> how many frames that is
    #: (refusals are never kept: they raise again on the next event)
    checked: dict[Any, int] = field(default_factory=dict, repr=False)
    #: the frame that entered the outermost guard (the caller's ``with``): the walks up
    #: the stack stop there. Frames below it are the caller's, which were there before
    #: the load began and which nothing the load runs can add to: an import in progress
    #: among them (a module that loads a model at import time) is not the file's doing.
    #: None (no import was in progress when the guard was entered, or it has closed and
    #: let the frame go): the walks go to the bottom of the stack
    entry: Any = field(default=None, repr=False, init=False)


_active: ContextVar[Scope | None] = ContextVar("safepoint_load_guard", default=None)
_installed = False
_install_lock = threading.Lock()
_STDLIB = frozenset(sys.stdlib_module_names)
#: importlib's module locks, one held by each import in progress (in any thread)
_MODULE_LOCKS: dict[str, Any] | None = getattr(
    sys.modules.get("_frozen_importlib"), "_module_locks", None
)


def is_active() -> bool:
    """Whether the calling context is inside a guarded load."""
    return _active.get() is not None


def _install() -> None:
    global _installed
    if _installed:
        return
    with _install_lock:
        if not _installed:
            sys.addaudithook(_hook)
            _installed = True


def _matches(event: str, prefixes: Iterable[str]) -> bool:
    return any((p.endswith(".") and event.startswith(p)) or event == p for p in prefixes)


def _imports_in_progress(frame: Any, depth: int = 0, stop: Any = None) -> list[tuple[str, Any]]:
    """The imports running further up the stack, innermost first: (module name, the
    frame of the code that asked for it). ``importlib.import_module`` runs Python's
    import machinery without the ``import`` audit event, so these are read off the
    machinery's own frames. ``depth``: how far ``frame`` already is from where the
    walk began (it stops 400 frames from there); ``stop``: the guard's entry frame
    (``Scope.entry``), the last one read (it may be the code that asked for an import
    the load made), or None: the bottom of the stack."""
    out: list[tuple[str, Any]] = []
    pending: str | None = None
    while frame is not None and depth < 400:
        code = frame.f_code
        if code.co_filename in _IMPORTLIB_FILES:
            if code.co_name == "_find_and_load":
                name = frame.f_locals.get("name")
                pending = name if isinstance(name, str) else "?"
        elif pending is not None:
            module = frame.f_globals.get("__name__")
            if not (isinstance(module, str) and _top(module) in _TRANSPARENT):
                out.append((pending, frame))
                pending = None
        frame = None if frame is stop else frame.f_back
        depth += 1
    if pending is not None:
        out.append((pending, None))
    return out


def _is_find_and_load(code: Any) -> bool:
    return code.co_filename in _IMPORTLIB_FILES and code.co_name == "_find_and_load"


def _import_in_progress(frame: Any, stop: Any = None) -> tuple[Any, int]:
    """The ``_find_and_load`` frame of the innermost import running at or above
    ``frame`` within 400 frames and not below ``stop``, and its depth; (None, 0) if
    none is: exactly when ``_imports_in_progress(frame, stop=stop)`` is empty."""
    depth = 0
    while frame is not None and depth < 400:
        if _is_find_and_load(frame.f_code):
            return frame, depth
        frame = None if frame is stop else frame.f_back
        depth += 1
    return None, 0


def _check_imports_in_progress(scope: Scope, frame: Any) -> bool:
    """Whether an import is running further up the stack (``_imports_in_progress(frame)``
    is not empty); each one running is checked, innermost first (a refused one raises).

    The same walk and checks as ``_imports_in_progress``, but a module's import raises
    several events (``marshal.loads``, ``exec``, one per class or function its body
    builds with ``exec``/``compile``) and the imports above it are the same for all of
    them and for the imports it starts: the walk stops at an import in progress whose
    chain up to the bottom of the stack was checked before (reading ``f_code`` of every
    frame is itself an audit event: whole walks cost a cold ``safepoint score`` of a
    scikit-learn model 0.3 s, docs/benchmarks.md). A chain is kept only when its walk
    reached the bottom of the stack, and used only when this walk would reach the
    bottom within its 400 frames too; its frame is held in the scope, so no other
    frame can take its identity. Walks stop at the guard's entry frame (``scope.entry``,
    where the memo's chains end too: the scope, and so its memo, has one)."""
    stop = scope.entry
    out: list[tuple[str, Any]] = []
    pending: str | None = None
    imports: list[tuple[Any, int]] = []
    depth = 0
    bottom: int | None = None
    hit = False
    while frame is not None and depth < 400:
        code = frame.f_code
        if code.co_filename in _IMPORTLIB_FILES:
            if code.co_name == "_find_and_load":
                known = scope.checked.get(frame)
                if known is not None and depth + known <= 400:
                    # pending (an import of the machinery's own) is replaced here, as
                    # in the full walk, and the chain from here up was all allowed
                    bottom, pending, hit = depth + known, None, True
                    break
                imports.append((frame, depth))
                name = frame.f_locals.get("name")
                pending = name if isinstance(name, str) else "?"
        elif pending is not None:
            module = frame.f_globals.get("__name__")
            if not (isinstance(module, str) and _top(module) in _TRANSPARENT):
                out.append((pending, frame))
                pending = None
        frame = None if frame is stop else frame.f_back
        depth += 1
    else:
        if frame is None:
            bottom = depth
    if pending is not None:
        out.append((pending, None))
    for module, importer in out:
        _check_import(scope, module, importer)
    if bottom is not None:
        for found, at in imports:
            scope.checked[found] = bottom - at
    return hit or bool(imports)


def _fd_path(fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def in_temp_dir(args: tuple[Any, ...]) -> bool:
    """An ``open``/``os.mkdir``/``os.remove``/``shutil.rmtree``... event on a path in
    the temporary folder (where adapters unpack a model for their framework). A file
    descriptor, or a path relative to a directory descriptor (``shutil.rmtree`` works
    that way), is resolved through ``/proc/self/fd``."""
    import tempfile

    path = args[0] if args else None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if isinstance(path, int) and not isinstance(path, bool):
        path = _fd_path(path)
    if not isinstance(path, str):
        return False
    # open(path, mode, flags) names no directory; os.remove(path, dir_fd),
    # os.mkdir(path, mode, dir_fd) and the like end with one (-1 or None: the cwd)
    is_open = len(args) == 3 and (args[1] is None or isinstance(args[1], str))
    dir_fd = None if is_open or len(args) < 2 else args[-1]
    if (
        not os.path.isabs(path)
        and isinstance(dir_fd, int)
        and not isinstance(dir_fd, bool)
        and dir_fd >= 0
    ):
        base = _fd_path(dir_fd)
        if base is None:
            return False
        path = os.path.join(base, path)
    tmp = os.path.realpath(tempfile.gettempdir())
    return os.path.realpath(path).startswith(tmp + os.sep)


_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def to_loopback(args: tuple[Any, ...]) -> bool:
    """A socket event that names only this machine: ``socket.getaddrinfo`` of a
    loopback host, ``socket.connect``/``bind`` to a loopback address, or the creation
    of a socket (``socket.__new__``, which names no address)."""
    if not args:
        return False
    first = args[0]
    if isinstance(first, str | bytes):  # getaddrinfo(host, port, ...)
        host = first.decode() if isinstance(first, bytes) else first
        return host in _LOOPBACK
    if len(args) >= 2 and isinstance(args[1], tuple) and args[1]:  # connect(sock, addr)
        return str(args[1][0]) in _LOOPBACK
    return len(args) in (1, 4)  # socket.__new__(sock, family, type, proto)


def _importer(frame: Any, stop: Any = None) -> tuple[str | None, Any]:
    """The module whose code asked for an import (the first frame outside the import
    machinery and the modules that import for their caller, not below ``stop``), and
    that frame."""
    depth = 0
    while frame is not None and depth < 400:
        if frame.f_code.co_filename not in _IMPORTLIB_FILES:
            name = frame.f_globals.get("__name__")
            if not isinstance(name, str):
                return None, frame
            if _top(name) not in _TRANSPARENT:
                return name, frame
        frame = None if frame is stop else frame.f_back
        depth += 1
    return None, None


def _top(module: str) -> str:
    return module.partition(".")[0]


def _writes(args: tuple[Any, ...]) -> bool:
    mode = args[1] if len(args) > 1 else None
    flags = args[2] if len(args) > 2 else 0
    if isinstance(mode, str) and any(c in mode for c in "wax+"):
        return True
    return isinstance(flags, int) and bool(flags & _WRITE_FLAGS)


def _hook(event: str, args: tuple[Any, ...]) -> None:
    scope = _active.get()
    if scope is None:
        return
    if event == "import":
        module = args[0] if args and isinstance(args[0], str) else ""
        _check_import(scope, module, sys._getframe(1))
        return
    if event == "open":
        if not _writes(args):
            return
    elif event not in _EXACT and not event.startswith(_PREFIXES):
        return
    if _allows(scope.allow, event, args):
        return
    # importing is compiling and running a module's code: allowed when every import
    # in progress is one the guard allows
    if _matches(event, _IMPORT_TIME) and _check_imports_in_progress(scope, sys._getframe(1)):
        return
    _refuse(scope, event, args)


def _import_allowed(scope: Scope, module: str, frame: Any) -> bool:
    if _top(module) in scope.packages or _allows(scope.allow, "import", (module,)):
        return True
    importer, frame = _importer(frame, scope.entry)
    if importer is None:
        return False
    itop = _top(importer)
    if itop in scope.libraries or (itop in _STDLIB and itop not in _TRANSPARENT):
        # a library's own code (or the standard library's, which got here through one)
        # importing what it needs: not the file's choice
        return True
    if itop == _top(module) and itop in sys.modules and itop not in scope.packages:
        # a package imported before (a library's dependency) loading its own submodule
        return True
    # a module being imported (itself allowed) pulling in its dependencies; an import
    # the caller began before the load (below the entry frame) pulls in nothing
    return (
        frame is not None
        and frame is not scope.entry
        and _import_in_progress(frame.f_back, scope.entry)[0] is not None
    )


def _check_import(scope: Scope, module: str, frame: Any) -> None:
    if not _import_allowed(scope, module, frame):
        _refuse(scope, "import", (module,))


def _refuse(scope: Scope, event: str, args: tuple[Any, ...]) -> None:
    detail = ""
    if args:
        first = args[0]
        detail = f" ({first!r})" if isinstance(first, str | bytes | int) else ""
    message = (
        f"{scope.what} tried to {_describe(event)}{detail[:200]}, which loading a model never "
        "needs: refused. The file is crafted, or a type trusted by name does this on load."
    )
    if scope.refused is None:
        scope.refused = message
    scope.events.append(event)
    raise LoadGuardError(message)


def _describe(event: str) -> str:
    if event.startswith("socket."):
        return f"use the network ({event})"
    if event in ("subprocess.Popen",) or event.startswith(("os.exec", "os.spawn", "os.posix")):
        return f"start a process ({event})"
    if event in ("os.system", "os.fork", "os.forkpty", "pty.spawn"):
        return f"start a process ({event})"
    if event in ("exec", "compile", "code.__new__", "function.__new__", "marshal.loads"):
        return f"run code it built ({event})"
    if event == "pickle.find_class":
        return "unpickle data (pickle.find_class)"
    if event == "open":
        return "open a file for writing"
    if event == "import":
        return "import a module its types table does not name"
    if event.startswith("ctypes."):
        return f"call native code through ctypes ({event})"
    return f"do {event}"


def guarded(
    what: str,
    *,
    packages: Iterable[str] = (),
    libraries: Iterable[str] = (),
    allow: Iterable[Allowance] = (),
) -> Guarded:
    """Refuse, in this context, every event a load never needs.

    Args:
        what: the operation, for messages ("loading m.sp").
        packages: top-level packages (or modules) the operation may import from,
            beyond numpy, scipy, pandas, pyarrow and safepoint: those the file's
            audited types table names.
        libraries: those of ``packages`` whose names the default trust set holds
            (their code may import what it needs at run time).
        allow: events an adapter's loader needs: prefixes (``"ctypes."``), or
            (prefix, predicate of the event's arguments) pairs that admit only
            some calls (a socket to loopback, a write under the temp folder).

    Nested guards keep the outer scope's refusals: a nested guard can only add
    packages and allowances for its own duration (an adapter inside a load).

    The checks of imports in progress look up the stack only as far as the frame that
    entered the outermost guard: an import the caller began before (a module that
    loads a model when it is imported) is not the load's.

    Example:
        >>> from safepoint.format.guard import guarded
        >>> with guarded("loading m.sp", packages=["sklearn"]):
        ...     pass
    """
    return Guarded(what, packages, libraries, allow)


class Guarded:
    """The context manager :func:`guarded` returns (one use). A class rather than a
    generator-based context manager: every load enters one, and the generator's
    set-up and tear-down cost more than a small load's whole guard work."""

    __slots__ = ("_allow", "_libraries", "_outer", "_packages", "_scope", "_token", "_what")

    def __init__(
        self,
        what: str,
        packages: Iterable[str],
        libraries: Iterable[str],
        allow: Iterable[Allowance],
    ) -> None:
        self._what = what
        self._packages = packages
        self._libraries = libraries
        self._allow = allow

    def __enter__(self) -> Scope:
        if not _installed:
            _install()
        outer = _active.get()
        if outer is not None:
            # the outermost guard's entry: a nested guard (an adapter inside a load, a
            # load inside a load) still sees every import the outer load has in progress
            entry = outer.entry
        elif _MODULE_LOCKS is None or _MODULE_LOCKS:
            entry = sys._getframe(1)
        else:
            # no module lock held: no import is in progress below (one not yet holding
            # its lock, in code run by the machinery's fast path, is then checked as
            # before: stricter, never looser). sys._getframe is an audit event, through
            # this hook: it would cost a small load 2% (callgrind, bench_small --only empty)
            entry = None
        libs = BASE_PACKAGES.union(map(_top, self._libraries))
        pkgs = libs.union(map(_top, self._packages))
        allowed = tuple(self._allow)
        if outer is not None:
            pkgs |= outer.packages
            libs |= outer.libraries
            allowed = (*outer.allow, *allowed)
        scope = Scope(self._what, allowed, pkgs, libs)
        if entry is not None:
            scope.entry = entry
        self._outer = outer
        self._scope = scope
        self._token = _active.set(scope)
        return scope

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        scope, outer = self._scope, self._outer
        _active.reset(self._token)
        if scope.checked:
            scope.checked.clear()  # the frames it holds
        if scope.entry is not None:
            scope.entry = None
        refused = scope.refused
        if refused is None:
            return  # any exception propagates as it is
        if outer is not None and outer.refused is None:
            outer.refused = refused
        if exc is None:
            # the payload may have swallowed the exception: the operation still fails
            raise LoadGuardError(refused)
        if isinstance(exc, LoadGuardError):
            return
        # a refused event, caught by the code that caused it, turned into another error
        raise LoadGuardError(refused) from exc
