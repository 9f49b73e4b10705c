"""The store conformance suite against every backend combination."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from safepoint.errors import SafepointWarning
from safepoint.stores import Store
from safepoint.testing.store_conformance import StoreConformance


class TestLocalSQLite(StoreConformance):
    @pytest.fixture
    def store_factory(self, tmp_path: Path) -> Callable[[], Store]:
        return lambda: Store(tmp_path / "store")


class TestMemory(StoreConformance):
    @pytest.fixture
    def store_factory(self, tmp_path: Path) -> Callable[[], Store]:
        url = f"memory://sp-{tmp_path.name}"
        return lambda: Store(url)


class TestS3SQLite(StoreConformance):
    @pytest.fixture
    def store_factory(
        self, s3_storage_options: dict[str, Any], s3_bucket: str, tmp_path: Path
    ) -> Callable[[], Store]:
        def make() -> Store:
            with warnings.catch_warnings():
                # the one-user catalog is known here; other warnings must still show
                warnings.filterwarnings(
                    "ignore", message=".*serves one user", category=SafepointWarning
                )
                return Store(
                    f"s3://{s3_bucket}/models",
                    metadata=f"sqlite:///{tmp_path}/catalog.db",
                    storage_options=s3_storage_options,
                )

        return make


@pytest.mark.postgres
class TestLocalPostgres(StoreConformance):
    @pytest.fixture
    def store_factory(self, pg_url: str, tmp_path: Path) -> Callable[[], Store]:
        return lambda: Store(tmp_path / "store", metadata=pg_url)
