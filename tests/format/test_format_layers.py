"""The format core depends on no plugin: plugins register in ``format/registry.py``.

Checked on the source (every import statement, also those inside functions), so that a
lazy import cannot slip a dependency back in: the core modules import only other core
modules, the registry imports no safepoint module at all, and the built-ins load from
the one list ``registry.BUILTINS``.
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

import safepoint.format
from safepoint.format import registry

FORMAT = Path(safepoint.format.__file__).parent

#: the format core: it finds what plugins provide through the registry only
CORE = [
    "api",
    "construction",
    "decoder",
    "encoder",
    "environment",
    "guard",
    "integrity",
    "_parallel_io",
    "reader",
    "registry",
    "spec",
    "trust",
    "writer",
]
#: plugins and the layers above the format
FORBIDDEN = (
    "safepoint.adapters",
    "safepoint.workflows",
    "safepoint.stores",
    "safepoint.importers",
    "safepoint.cli",
    "safepoint.ui",
    "safepoint.format.handlers",
    "safepoint.format.sklearn",
    "safepoint._own_types",
)


def _imports(module: str) -> set[str]:
    """Every module ``safepoint.format.<module>`` imports, relative imports resolved."""
    package = "safepoint.format"
    tree = ast.parse((FORMAT / f"{module}.py").read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            out.add(target)
            # `from . import x` imports the submodule x
            out.update(f"{target}.{alias.name}" for alias in node.names)
    return out


@pytest.mark.parametrize("module", CORE)
def test_the_core_imports_no_plugin(module: str) -> None:
    bad = sorted(name for name in _imports(module) if any(name.startswith(f) for f in FORBIDDEN))
    assert not bad, f"safepoint.format.{module} imports {bad}: register through format.registry"


def test_the_registry_is_a_leaf() -> None:
    own = sorted(
        name
        for name in _imports("registry")
        if name.startswith("safepoint") and not name.startswith("safepoint.format.registry")
    )
    # `.decoder`/`.encoder` are named for type checkers only (under TYPE_CHECKING)
    assert set(own) <= {
        "safepoint.format.decoder",
        "safepoint.format.decoder.Decoder",
        "safepoint.format.encoder",
        "safepoint.format.encoder.Encoder",
    }, own


def test_builtins_load_from_one_list() -> None:
    for name in registry.BUILTINS:
        assert name in sys.modules, f"{name} is in BUILTINS but was not loaded"
        importlib.import_module(name)
    # every module of the handler and scikit-learn packages is in the list
    for package in ("handlers", "sklearn"):
        for path in sorted((FORMAT / package).glob("*.py")):
            if path.stem.startswith("_"):
                continue
            assert f"safepoint.format.{package}.{path.stem}" in registry.BUILTINS, path


def test_plugins_registered_through_the_registry() -> None:
    assert registry.handler_for_tag("obj") is not None
    assert registry.list_encoder() is not None
    assert registry.trusted_by_rules("sklearn.linear_model._base", "LinearRegression", "obj")
    assert not registry.trusted_by_rules("os", "system", "ref")
    assert registry.replaced_type(
        "sklearn.compose._column_transformer", "_RemainderColsList", "obj"
    )
