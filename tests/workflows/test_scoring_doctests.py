"""The examples in the scoring modules' docstrings run as written."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "safepoint.workflows.scoring.aio",
    "safepoint.workflows.scoring.frameworks",
    "safepoint.workflows.scoring.h2o_scoring",
    "safepoint.workflows.scoring.schema",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
