"""The collector is paused while a model is written or rebuilt, and only then."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import safepoint as sp
from safepoint import _gc


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


class Spy:
    """Records whether the collector ran while its state was being set."""

    seen: list[bool] = []

    def __setstate__(self, state: dict[str, Any]) -> None:
        Spy.seen.append(gc.isenabled())
        self.__dict__.update(state)

    def __getstate__(self) -> dict[str, Any]:
        Spy.seen.append(gc.isenabled())
        return dict(self.__dict__)


def test_paused_while_writing_and_rebuilding_then_resumed() -> None:
    spy = Spy()
    spy.w = np.arange(3)
    Spy.seen.clear()
    data = sp.dumps({"spy": spy})
    sp.loads(data, trusted=["test_gc_pause.Spy"])
    assert Spy.seen == [False, False]
    assert gc.isenabled()


def test_paused_until_the_footer_is_written(monkeypatch: pytest.MonkeyPatch) -> None:
    """The manifest and the environment record are made while every container of the
    encoding is alive: a collection there would walk them all."""
    from safepoint.format import api, writer

    seen: list[bool] = []
    real_env, real_finish = api.capture_json, writer.BufferSink.finish

    def env(packages: set[str]) -> str:
        seen.append(gc.isenabled())
        return real_env(packages)

    def finish(self: Any, *a: Any, **k: Any) -> Any:
        seen.append(gc.isenabled())
        return real_finish(self, *a, **k)

    monkeypatch.setattr(api, "capture_json", env)
    monkeypatch.setattr(writer.BufferSink, "finish", finish)
    sp.dumps({"a": np.arange(3)}, metadata={"run": 1})
    assert seen == [False, False]
    assert gc.isenabled()


def test_a_collector_the_caller_disabled_stays_disabled() -> None:
    gc.disable()
    sp.loads(sp.dumps({"a": [1, 2]}))
    assert not gc.isenabled()


def test_resumed_after_an_error() -> None:
    with pytest.raises(sp.FormatError):
        sp.loads(b"not a safepoint file at all, just bytes")
    with pytest.raises(sp.SerializationError):
        sp.dumps(lambda: 1)
    assert gc.isenabled()


def test_nested_and_concurrent_pauses_resume_once_the_last_ends() -> None:
    entered = threading.Barrier(2)
    leave = threading.Event()
    states: list[bool] = []

    def worker() -> None:
        with _gc.paused():
            entered.wait()
            leave.wait()

    t = threading.Thread(target=worker)
    t.start()
    with _gc.paused():
        entered.wait()
        with _gc.paused():
            states.append(gc.isenabled())
        states.append(gc.isenabled())
    # this thread left; the worker is still inside
    states.append(gc.isenabled())
    leave.set()
    t.join()
    assert states == [False, False, False]
    assert gc.isenabled()
