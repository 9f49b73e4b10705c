"""The public surface of ``safepoint`` is exactly ``sp.__all__`` (as httpx tests its own).

A name added to the package without being listed (or listed without existing) fails
here, and so does an exception class defined outside :mod:`safepoint.errors`.
"""

from __future__ import annotations

import ast
import types
from pathlib import Path

import safepoint as sp
import safepoint.errors

SRC = Path(sp.__file__).parent


def test_all_is_the_public_names() -> None:
    bound = {
        name
        for name, value in vars(sp).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)  # subpackages, bound when imported
        and name not in ("TYPE_CHECKING", "annotations")  # typing and __future__ names
    }
    lazy = set(sp._LAZY)
    assert bound | lazy | {"__version__"} == set(sp.__all__)
    assert len(sp.__all__) == len(set(sp.__all__))


def test_every_public_name_resolves() -> None:
    for name in sp.__all__:
        assert getattr(sp, name) is not None, name


def test_every_error_of_the_tree_is_exported() -> None:
    assert set(safepoint.errors.__all__) <= set(sp.__all__)
    for name in safepoint.errors.__all__:
        cls = getattr(sp, name)
        assert issubclass(cls, sp.SafepointError | sp.SafepointWarning), name
        # the docstring's drawing of the tree names every class
        assert name in (safepoint.errors.__doc__ or ""), f"{name} is missing from the tree"


#: exception classes allowed outside errors.py: private control flow, never raised to a
#: caller; and SparkScoringError (workflows/scoring), which is to move there too
_ALLOWED_ELSEWHERE = {
    "_LocalWriteError",
    "_Miss",
    "_NotJSON",
    "_Stopped",
    "BridgeCancelled",
    "SparkScoringError",
}


def test_exceptions_are_defined_in_errors_py() -> None:
    found = []
    for path in SRC.rglob("*.py"):
        if path.name == "errors.py" and path.parent == SRC:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ClassDef):
                continue
            bases = [ast.unparse(b) for b in node.bases]
            is_exception = any(b.endswith(("Error", "Warning", "Exception")) for b in bases)
            if is_exception and node.name not in _ALLOWED_ELSEWHERE:
                found.append(f"{path.relative_to(SRC)}: {node.name}")
    assert not found, f"define these in safepoint/errors.py: {found}"
