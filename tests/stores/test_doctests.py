"""The examples in the store modules' docstrings run as written."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "safepoint.stores.names",
    "safepoint.stores.blobs",
    "safepoint.stores.catalog",
    "safepoint.stores.store",
    "safepoint.stores.checkpointer",
    "safepoint.stores.runs",
    "safepoint.stores.arguments",
    "safepoint.stores.faults",
    "safepoint.stores.owners",
    "safepoint.stores.opening",
    "safepoint.stores.records",
    "safepoint.stores.cache",
    "safepoint.testing.recovery",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
