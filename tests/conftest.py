from __future__ import annotations

import os

import pytest

os.environ.setdefault("SAFEPOINT_QUIET", "1")


@pytest.fixture
def tmp(tmp_path):  # short alias used across the suite
    return tmp_path


@pytest.fixture
def new_file_mode() -> int:
    """The permission bits a new file gets here: 0666 less the umask (read by setting
    it and putting it back, before the test starts any thread)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


# the read cache of remote stores: never the user's own cache folder
if "SAFEPOINT_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["SAFEPOINT_CACHE_DIR"] = tempfile.mkdtemp(prefix="sp-test-cache-")
