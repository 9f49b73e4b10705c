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
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import safepoint as sp
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


# -- a load inside an import: the walks stop at the guard's entry ----------------------------
#
# A module that loads its model at import time (a web app imported by uvicorn, a notebook's
# helper module) runs the whole load inside the caller's own import of that module. Frames
# below the one that entered the guard are the caller's, there before the load began: the
# file cannot add to them, so the guard's walks stop there. What the load itself imports,
# and what a payload imports, is above that frame and is checked as before.

_ADVERSARIAL = Path(__file__).resolve().parent
_SRC = _ADVERSARIAL.parents[1] / "src"


def _fresh(folder: Path, code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a new interpreter (nothing of scikit-learn imported yet: the load
    imports it), with ``folder`` and the gadgets on its path."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=folder,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(folder), str(_SRC), str(_ADVERSARIAL)]),
            "SAFEPOINT_CANARY": str(folder / "canary"),
            "SAFEPOINT_QUIET": "1",
        },
        capture_output=True,
        text=True,
        timeout=300,
    )


_IMPORTERS = {
    "import": "import usermod as m",
    "import_module": "import importlib; m = importlib.import_module('usermod')",
    # a module imported by a module (an app package's __init__ importing its model module)
    "nested": "import userapp; m = userapp.usermod",
}


@pytest.mark.parametrize("how", list(_IMPORTERS))
def test_a_module_that_loads_a_model_when_imported(tmp_path: Path, how: str) -> None:
    """The load runs inside the import of the caller's module and imports scikit-learn's
    submodules as it goes (a fresh interpreter): the caller's import in progress is not
    one the file asked for."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    models = {
        "lr": make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y),
        "rf": RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y),
    }
    for name, model in models.items():
        sp.dump(model, tmp_path / f"{name}.sp")
    _write(
        tmp_path,
        "usermod",
        "import safepoint as sp\nlr = sp.load('lr.sp')\nrf = sp.load('rf.sp')\n",
    )
    _write(tmp_path, "userapp", "from usermod import lr\nimport usermod\n")
    np.save(tmp_path / "X.npy", X)
    proc = _fresh(
        tmp_path,
        "import sys, json, numpy as np\n"
        "assert not any(k.startswith('sklearn') for k in sys.modules)\n"
        f"{_IMPORTERS[how]}\n"
        "assert 'sklearn.ensemble._forest' in sys.modules\n"
        "X = np.load('X.npy')\n"
        "print(json.dumps({k: getattr(m, k).predict(X).tolist() for k in ('lr', 'rf')}))\n",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == {k: m.predict(X).tolist() for k, m in models.items()}


def _payload_module(folder: Path) -> None:
    """A class of the caller's own (trusted by name) whose __setstate__ imports a module
    no types table names with an ``import`` statement (the ``import`` audit event, where
    gadgets.SetstateImports goes through ``importlib.import_module``, which has none)."""
    _write(
        folder,
        "gi_unnamed",
        "from gadgets import touch\ntouch('gi_unnamed imported')\n",
    )
    _write(
        folder,
        "gi_payload",
        "class StatementImport:\n"
        "    def __init__(self, arg=None):\n"
        "        self.arg = arg\n"
        "    def __getstate__(self):\n"
        "        return {'arg': self.arg}\n"
        "    def __setstate__(self, state):\n"
        "        import gi_unnamed\n",
    )


_HOSTILE = [
    ("gadgets.SetstateImports", "import a module"),
    ("gi_payload.StatementImport", "import a module"),
    ("gadgets.SetstateExecs", "run code it built"),
    ("gadgets.SetstateWrites", "open a file for writing"),
    ("gadgets.SetstateSystem", "start a process"),
]


@pytest.mark.parametrize(("name", "what"), _HOSTILE, ids=[n for n, _ in _HOSTILE])
@pytest.mark.parametrize("how", ["import", "import_module"])
def test_a_hostile_file_loaded_when_a_module_is_imported(
    tmp_path: Path, name: str, what: str, how: str
) -> None:
    """The same module loading a file whose trusted class does what a payload does: still
    refused. The payload's imports (and its exec) run above the load's entry, where the
    caller's import in progress (below it) pulls in nothing on the payload's behalf."""
    _payload_module(tmp_path)
    module, _, qual = name.partition(".")
    proc = _fresh(
        tmp_path,
        f"import importlib, safepoint as sp, {module}\n"
        f"sp.dump({{'x': {module}.{qual}('0'), 'y': [1.0]}}, 'm.sp')\n",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    _write(
        tmp_path,
        "usermod",
        f"import safepoint as sp\nmodel = sp.load('m.sp', trusted=[{name!r}])\n",
    )
    proc = _fresh(tmp_path, f"{_IMPORTERS[how]}\n")
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("safepoint.errors.LoadGuardError") and what in last, proc.stderr
    assert "usermod" not in last
    assert not (tmp_path / "canary").exists()


def test_the_memo_agrees_with_the_walk_stopped_at_the_entry(pkgdir: tuple[Path, str]) -> None:
    """The imports of the nest of test_the_memo_agrees_with_the_full_walk, run by a guard
    entered inside the import of a module no scope names (the caller's): the memoised
    check gives the answer of the full walk stopped at the entry, at stack depths below,
    around and beyond the walk's 400 frames from the entry; the walk to the bottom of the
    stack refuses the caller's import."""
    folder, p = pkgdir
    seen: list[tuple[Any, ...]] = []
    packages = {"all": {"a", "b", "c", "d"}, "outer": {"a"}, "none": set()}
    scopes: dict[str, guard.Scope] = {}

    def probe(frame: Any) -> None:
        for name, scope in scopes.items():
            ref = guard._imports_in_progress(frame, stop=scope.entry)
            rscope = _scope("ref", scope.packages, scope.entry)
            want = _verdict(
                lambda ref=ref, rscope=rscope: (
                    [guard._check_import(rscope, m, f) for m, f in ref] and True
                )
            )
            got = _verdict(lambda scope=scope: guard._check_imports_in_progress(scope, frame))
            seen.append((name, len(ref), want, got))
            assert got == want, (name, frame.f_globals["__name__"], ref, want, got)
            # the caller's import, below the entry, is in the walk to the bottom
            whole = [m for m, _ in guard._imports_in_progress(frame, depth=-(10**6))]
            assert whole[-1] == f"{p}_user", whole

    def deep(n: int) -> Any:
        return deep(n - 1) if n else importlib.import_module(f"{p}_a")

    def enter(recursion: int) -> None:
        """What ``with guarded(...)`` in the caller's module does: this frame enters."""
        here = sys._getframe()
        for name, pkgs in packages.items():
            scopes[name] = _scope("probe", frozenset(f"{p}_{x}" for x in pkgs), here)
        deep(recursion)

    probe_mod = type(sys)(f"{p}_probe")
    probe_mod.probe = probe  # type: ignore[attr-defined]
    probe_mod.enter = enter  # type: ignore[attr-defined]
    probe_mod.recursion = 0  # type: ignore[attr-defined]
    sys.modules[f"{p}_probe"] = probe_mod

    _probe_module(folder, p, f"{p}_d")
    _probe_module(folder, p, f"{p}_c", f"__import__('{p}_d')\n")
    _probe_module(folder, p, f"{p}_b", f"import importlib\nimportlib.import_module('{p}_c')\n")
    _probe_module(folder, p, f"{p}_a", f"from {p}_b import probe as _\nimport {p}_b\n")
    _write(folder, f"{p}_user", f"import {p}_probe as pr\npr.enter(pr.recursion)\n")

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + 1000)
    try:
        for where, recursion in {"shallow": 0, "straddling": 380, "beyond": 420}.items():
            seen.clear()
            probe_mod.recursion = recursion  # type: ignore[attr-defined]
            sys.modules.pop(f"{p}_user", None)
            for m in "abcd":
                sys.modules.pop(f"{p}_{m}", None)
            importlib.import_module(f"{p}_user")
            assert sorted({n for _, n, _, _ in seen}) == [1, 2, 3, 4], where
            assert len(seen) == 3 * 2 * 4
            assert {w for name, _, w, _ in seen if name == "all"} == {("ok", True)}
            assert ("refused", None) in {w for name, _, w, _ in seen if name == "none"}
            used = bool(scopes["all"].checked)
            assert used == (where != "beyond"), (where, len(scopes["all"].checked))
    finally:
        sys.setrecursionlimit(limit)


def _scope(what: str, packages: frozenset[str], entry: Any) -> guard.Scope:
    scope = guard.Scope(what, packages=packages)
    scope.entry = entry
    return scope


def test_nested_guards_stop_at_the_outermost_entry(pkgdir: tuple[Path, str]) -> None:
    """A guard entered while an import is in progress stops its walks at the frame that
    entered it; a guard inside a guard (an adapter inside a load, a load inside a load)
    at the outer one's, so it sees every import the outer one has in progress; the frame
    is let go when each guard closes. Outside any import, nothing is below to skip."""
    folder, p = pkgdir
    seen: list[tuple[Any, ...]] = []

    def nest() -> None:
        here = sys._getframe()
        with guard.guarded("outer") as outer:

            def inner() -> guard.Scope:
                with guard.guarded("inner", packages=["json"]) as scope:
                    seen.append((here, outer.entry, scope.entry))
                    return scope

            assert inner().entry is None
        assert outer.entry is None

    probe_mod = type(sys)(f"{p}_probe")
    probe_mod.nest = nest  # type: ignore[attr-defined]
    sys.modules[f"{p}_probe"] = probe_mod
    _write(folder, f"{p}_user", f"import {p}_probe\n{p}_probe.nest()\n")
    importlib.import_module(f"{p}_user")
    nest()
    (here, outer, inner), (_, outside, inner_outside) = seen
    assert outer is here and inner is here
    assert outside is None and inner_outside is None
