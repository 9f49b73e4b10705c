"""The load guard's checks of imports in progress, and the memo that makes them cheap.

Importing a module inside a load raises ``marshal.loads``, ``exec`` and ``compile``
events, which the guard allows only while every import in progress up the stack is
one it allows. The walk up the stack is remembered per import (a cold load of a
scikit-learn model imports some 850 modules inside the guard, and walking the whole
stack on each of their events cost it 0.3 s): these tests pin that the memo
never allows what the full walk (``guard._imports_in_progress``, the definition)
refuses, and the other way round.
"""

from __future__ import annotations

import importlib
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from safepoint.errors import LoadGuardError
from safepoint.format import guard


@pytest.fixture
def pkgdir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder on sys.path and a fresh package-name prefix (modules do not outlive
    the test)."""
    prefix = f"gi_{uuid.uuid4().hex[:10]}"
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path, prefix
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith(prefix)]:
            del sys.modules[name]


def _write(folder: Path, name: str, body: str) -> None:
    (folder / f"{name}.py").write_text(body)


# what a module body does that raises the events an import raises: classes and
# functions built by exec (dataclasses, namedtuple), eval, compile
_BUSY = """
import collections, dataclasses
Point = collections.namedtuple("Point", "x y")
@dataclasses.dataclass
class D:
    a: int = 1
    b: str = "x"
VALUE = eval("1 + 1")
CODE = compile("2", "<s>", "eval")
"""


def test_an_allowed_import_and_its_dependencies_run_their_code(
    pkgdir: tuple[Path, str],
) -> None:
    folder, p = pkgdir
    _write(folder, f"{p}_dep", _BUSY)
    _write(folder, f"{p}_lib", _BUSY + f"import {p}_dep\nfrom {p}_dep import D as D2\n")
    with guard.guarded("a test load", packages=[f"{p}_lib"]) as scope:
        mod = importlib.import_module(f"{p}_lib")
        assert scope.checked  # the memo was used...
    assert mod.VALUE == 2 and mod.D2().a == 1
    assert not scope.checked  # ...and lets its frames go when the guard closes
    assert scope.refused is None


def test_code_run_after_an_allowed_import_finished_is_refused(pkgdir: tuple[Path, str]) -> None:
    """The memo holds the frames of imports that were running: once an import is
    over, an ``exec`` in the same guard has no import in progress, and is refused."""
    folder, p = pkgdir
    _write(folder, f"{p}_lib", _BUSY)
    with (
        pytest.raises(LoadGuardError, match="run code it built"),
        guard.guarded("a test load", packages=[f"{p}_lib"]) as scope,
    ):
        importlib.import_module(f"{p}_lib")
        assert scope.checked
        exec("1")
    assert f"{p}_lib" in sys.modules


def test_an_unnamed_import_is_refused_every_time(pkgdir: tuple[Path, str]) -> None:
    """A module the scope does not name, imported by code that is not itself being
    imported (a payload's __setstate__): refused on its first event, and again on a
    second try (refusals are not remembered as checked)."""
    folder, p = pkgdir
    _write(folder, f"{p}_evil", _BUSY + "import os\nos.system('true')\n")
    for _ in range(2):
        with (
            pytest.raises(LoadGuardError, match="import a module"),
            guard.guarded("a test load") as scope,
        ):
            try:
                importlib.import_module(f"{p}_evil")
            except LoadGuardError:
                pass  # swallowed, as a payload would: the guard still fails
        assert not scope.checked and f"{p}_evil" not in sys.modules


def test_an_unnamed_import_under_an_allowed_one_already_checked(
    pkgdir: tuple[Path, str],
) -> None:
    """A module allowed, whose import was checked (memo filled), later calls code that
    imports an unnamed module outside any import: refused, memo or not."""
    folder, p = pkgdir
    _write(folder, f"{p}_evil", "X = 1\n")
    _write(
        folder,
        f"{p}_lib",
        _BUSY + "import importlib\ndef later(name):\n    return importlib.import_module(name)\n",
    )
    with (
        pytest.raises(LoadGuardError, match="import a module"),
        guard.guarded("a test load", packages=[f"{p}_lib"]),
    ):
        lib = importlib.import_module(f"{p}_lib")
        # called from here (a test module, not the library's import): the importer
        # of _evil is _lib's function, a library the scope names only as a package
        lib.later(f"{p}_evil")


# -- the memo agrees with the full walk, at every point of a nest of imports ------------------

_PROBE = """
import sys
from {p}_probe import probe
probe(sys._getframe())
"""


def _probe_module(folder: Path, p: str, name: str, body: str = "") -> None:
    _write(folder, name, _PROBE.format(p=p) + body + _PROBE.format(p=p))


def _verdict(check: Any) -> tuple[str, Any]:
    try:
        return "ok", check()
    except LoadGuardError:
        return "refused", None


def _stack_depth() -> int:
    frame, n = sys._getframe(1), 0
    while frame is not None:
        frame, n = frame.f_back, n + 1
    return n


@pytest.mark.parametrize("where", ["shallow", "straddling", "beyond"])
def test_the_memo_agrees_with_the_full_walk(pkgdir: tuple[Path, str], where: str) -> None:
    """At each probe (module bodies nested through ``import``, ``from``-imports,
    ``importlib.import_module`` and ``__import__``, at stack depths below, around and
    beyond the walk's 400 frames): the memoised check gives the same answer as
    checking every import of the full walk, for a scope that names the modules and
    for one that names only the outermost."""
    folder, p = pkgdir
    seen: list[tuple[Any, ...]] = []
    scopes = {
        "all": guard.Scope("probe", packages=frozenset({p + "_a", p + "_b", p + "_c", p + "_d"})),
        "outer": guard.Scope("probe", packages=frozenset({p + "_a"})),
        "none": guard.Scope("probe"),
    }
    refs = {k: guard.Scope("ref", packages=s.packages) for k, s in scopes.items()}

    def probe(frame: Any) -> None:
        for name, scope in scopes.items():
            ref = guard._imports_in_progress(frame)
            want = _verdict(
                lambda ref=ref, name=name: (
                    [guard._check_import(refs[name], m, f) for m, f in ref] and True
                )
            )
            got = _verdict(lambda scope=scope: guard._check_imports_in_progress(scope, frame))
            seen.append((name, len(ref), want, got))
            assert got == want, (name, frame.f_globals["__name__"], ref, want, got)

    probe_mod = type(sys)(f"{p}_probe")
    probe_mod.probe = probe  # type: ignore[attr-defined]
    sys.modules[f"{p}_probe"] = probe_mod

    _probe_module(folder, p, f"{p}_d")
    _probe_module(folder, p, f"{p}_c", f"__import__('{p}_d')\n")
    _probe_module(folder, p, f"{p}_b", f"import importlib\nimportlib.import_module('{p}_c')\n")
    _probe_module(folder, p, f"{p}_a", f"from {p}_b import probe as _\nimport {p}_b\n")

    # the nest adds some 7 frames per import: "straddling" puts the outer probes within
    # the walk's 400 frames of the bottom of the stack and the inner ones beyond
    recursion = {"shallow": 0, "straddling": 400 - _stack_depth() - 20, "beyond": 420}[where]

    def deep(n: int) -> Any:
        return deep(n - 1) if n else importlib.import_module(f"{p}_a")

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, recursion + 500))
    try:
        deep(recursion)
    finally:
        sys.setrecursionlimit(limit)
    # every module probed twice, under 1-4 imports in progress, by each of the 3 scopes
    assert sorted({n for _, n, _, _ in seen}) == [1, 2, 3, 4]
    assert len(seen) == 3 * 2 * 4
    assert {w for name, _, w, _ in seen if name == "all"} == {("ok", True)}
    assert ("refused", None) in {w for name, _, w, _ in seen if name == "none"}
    # the memo was used where the walk reached the bottom of the stack, never beyond
    assert bool(scopes["all"].checked) == (where != "beyond"), len(scopes["all"].checked)
