"""safepoint.testing.s3: the moto server helper the S3 tests, tools and benchmarks share."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from safepoint.errors import MissingDependencyError
from safepoint.testing.s3 import free_port, start_moto_server


def test_the_server_answers_and_is_stopped_by_the_caller() -> None:
    try:
        proc, url = start_moto_server()
    except MissingDependencyError as exc:
        pytest.skip(str(exc))
    try:
        port = int(url.rsplit(":", 1)[1])
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_missing_server_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    with pytest.raises(MissingDependencyError, match=r"\[test\] extra"):
        start_moto_server()


def test_free_port_is_free() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port()))
