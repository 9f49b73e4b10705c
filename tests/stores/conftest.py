"""Backends for the store tests: a real moto S3 server process, PostgreSQL schemas."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

PG_URL = os.environ.get("SAFEPOINT_TEST_PG", "postgresql://127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server in its own process on a free port; its URL."""
    pytest.importorskip("s3fs")
    from safepoint.errors import MissingDependencyError
    from safepoint.testing.s3 import start_moto_server

    try:
        proc, url = start_moto_server()
    except MissingDependencyError as exc:
        pytest.skip(str(exc))
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def s3_options(endpoint: str) -> dict[str, Any]:
    return {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }


@pytest.fixture(scope="session")
def s3_storage_options(s3_endpoint: str) -> dict[str, Any]:
    """fsspec storage options for the moto server."""
    return s3_options(s3_endpoint)


@pytest.fixture(scope="session")
def s3_client(s3_endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


@pytest.fixture
def s3_bucket(s3_client: Any) -> str:
    """A fresh bucket on the moto server; its name."""
    name = "sp-" + uuid.uuid4().hex[:12]
    s3_client.create_bucket(Bucket=name)
    return name


def _pg_reachable() -> str | None:
    import sqlalchemy as sa

    try:
        eng = sa.create_engine(
            PG_URL.replace("postgresql://", "postgresql+psycopg://", 1),
            connect_args={"connect_timeout": 3},
        )
        with eng.connect() as c:
            c.exec_driver_sql("SELECT 1")
        eng.dispose()
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return None


@pytest.fixture(scope="session")
def pg_available() -> None:
    problem = _pg_reachable()
    if problem:
        pytest.skip(f"PostgreSQL is not reachable at {PG_URL} ({problem})")


@pytest.fixture
def pg_url(pg_available: None) -> Iterator[str]:
    """A PostgreSQL catalog URL whose tables live in a schema of their own."""
    import sqlalchemy as sa

    schema = "sp_" + uuid.uuid4().hex[:12]
    eng = sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    with eng.begin() as c:
        c.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with eng.begin() as c:
            c.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        eng.dispose()
