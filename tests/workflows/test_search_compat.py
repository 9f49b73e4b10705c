"""Every private scikit-learn name the searches use goes through ``_sklearn_compat``.

Checked on the source (AST), so a new ``from sklearn... import _x`` or a call of a
private ``BaseSearchCV`` method outside the compat module fails here, on every
scikit-learn version, before it breaks the searches on another one.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import sklearn.model_selection._search as sk_search
import sklearn.model_selection._search_successive_halving as sk_halving

import safepoint.workflows.search as search_pkg
from safepoint.workflows.search import _sklearn_compat as compat

PACKAGE = Path(search_pkg.__file__).parent
COMPAT = "_sklearn_compat.py"


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.glob("*.py") if p.name != COMPAT)


def _sklearn_private_names() -> set[str]:
    """Private methods and attributes scikit-learn's search classes define or set."""
    names: set[str] = set()
    for module in (sk_search, sk_halving):
        source = inspect.getsource(module)
        names |= set(re.findall(r"def (_[a-z]\w*)\(", source))
        names |= set(re.findall(r"self\.(_[a-z]\w*)", source))
    return names


def test_no_private_sklearn_import_outside_compat() -> None:
    offenders = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sklearn"):
                private_module = any(p.startswith("_") for p in (node.module or "").split("."))
                private_names = [a.name for a in node.names if a.name.startswith("_")]
                if private_module or private_names:
                    offenders.append(f"{path.name}:{node.lineno} from {node.module}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("sklearn") and "._" in alias.name:
                        offenders.append(f"{path.name}:{node.lineno} import {alias.name}")
    assert offenders == [], f"private scikit-learn imports outside {COMPAT}: {offenders}"


def test_no_private_search_method_outside_compat() -> None:
    """``est._format_results(...)`` and the like are called through the compat module."""
    sklearn_private = _sklearn_private_names()
    assert "_format_results" in sklearn_private  # the scan finds what it looks for
    offenders = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in sklearn_private:
                offenders.append(f"{path.name}:{node.lineno} .{node.attr}")
    # _run_search is the hook scikit-learn asks subclasses to override: defining it is
    # the public way to customise a search; it is called only through the compat module.
    offenders = [o for o in offenders if not o.endswith("._run_search")]
    assert offenders == [], f"scikit-learn's private search members outside {COMPAT}: {offenders}"


def test_compat_knows_the_installed_version() -> None:
    assert compat.SKLEARN_VERSION >= compat.OLDEST_SUPPORTED
    # the >= 1.9 callback parameters come together or not at all
    assert compat.FIT_AND_SCORE_TAKES_CALLER == compat.FIT_AND_SCORE_TAKES_CALLBACK_CTX


def test_saved_class_names_are_unchanged() -> None:
    """Files record a fitted search by its class's module and name (format/trust.py
    trusts these): the package split kept them."""
    import safepoint as sp

    names = {
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in (
            sp.ResumableGridSearchCV,
            sp.ResumableRandomizedSearchCV,
            sp.ResumableHalvingGridSearchCV,
            sp.ResumableHalvingRandomSearchCV,
        )
    }
    assert names == {
        "safepoint.workflows.search.ResumableGridSearchCV",
        "safepoint.workflows.search.ResumableRandomizedSearchCV",
        "safepoint.workflows.search_halving.ResumableHalvingGridSearchCV",
        "safepoint.workflows.search_halving.ResumableHalvingRandomSearchCV",
    }
