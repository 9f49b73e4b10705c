from __future__ import annotations

import os

import pytest

os.environ.setdefault("SAFEPOINT_QUIET", "1")


@pytest.fixture
def tmp(tmp_path):  # short alias used across the suite
    return tmp_path


# the read cache of remote stores: never the user's own cache folder
if "SAFEPOINT_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["SAFEPOINT_CACHE_DIR"] = tempfile.mkdtemp(prefix="sp-test-cache-")
