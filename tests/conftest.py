from __future__ import annotations

import os

import pytest

os.environ.setdefault("SAFEPOINT_QUIET", "1")


@pytest.fixture
def tmp(tmp_path):  # short alias used across the suite
    return tmp_path
