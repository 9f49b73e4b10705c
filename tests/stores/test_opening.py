"""open_store: one way from what a caller passed (StoreLike) to a Store."""

from __future__ import annotations

from pathlib import Path

import pytest

import safepoint as sp
from safepoint.errors import InvalidArgumentError, NotFoundError, StepConfigError
from safepoint.stores import open_store


def test_open_store_accepts_store_path_url_and_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = sp.Store(str(tmp_path / "a"))
    assert open_store(store) is store
    assert open_store(tmp_path / "b").url == str(tmp_path / "b")
    assert open_store("memory://open-store-test").url == "memory://open-store-test"
    monkeypatch.setenv("SAFEPOINT_STORE", str(tmp_path / "default"))
    assert open_store(None).url == str(tmp_path / "default")
    with pytest.raises(NotFoundError):
        open_store(tmp_path / "missing", create=False)


def test_open_store_refuses_other_things() -> None:
    with pytest.raises(InvalidArgumentError, match="Store, a URL or a folder path, not int"):
        open_store(3)  # type: ignore[arg-type]


def test_workflows_say_it_in_their_own_error(tmp_path: Path) -> None:
    with pytest.raises(StepConfigError, match="not int"):
        sp.Steps("flow", store=3)  # type: ignore[arg-type]
