"""The examples in the docstrings of the CLI, HTTP and console helpers run as written."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "safepoint.cli._common",
    "safepoint._http",
    "safepoint.ui.data",
    "safepoint.errors",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
