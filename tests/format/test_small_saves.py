"""The fast paths of a small save (issue 19) write what the general paths wrote.

A small save skips work: plain values are not dispatched, the environment record is
JSON text made once per process, small raw buffers are written inline. These tests pin
what those shortcuts must keep: the bytes, the error paths, short writes and an
environment record that follows the packages a file holds.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

import safepoint as sp
from safepoint.format import open as open_file
from safepoint.format.environment import capture, capture_json
from safepoint.format.writer import WriteResult


class TinyWrites(io.RawIOBase):
    """A raw file that writes at most 7 bytes per call (as raw files may)."""

    def __init__(self) -> None:
        self.out = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        part = bytes(memoryview(b).cast("B")[:7])
        self.out += part
        return len(part)


def _small() -> dict[str, Any]:
    return {
        "w": np.arange(13, dtype=np.float64),
        "f": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        "r": np.arange(6.0).reshape(2, 3)[::-1],
        "t": np.arange(0, 3, dtype="M8[s]"),
        "s": np.zeros(2, dtype=[("a", "<i4"), ("b", "<f8")]),
        "e": np.zeros((0, 3)),
        "x": [1, 2**70, -(2**63), 2**64 - 1, 1.5, None, True, "s", b"b"],
    }


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            assert a[k].dtype == b[k].dtype and a[k].strides == b[k].strides
            np.testing.assert_array_equal(a[k], b[k])
        else:
            assert a[k] == b[k]


@pytest.mark.parametrize("key", [None, b"k" * 32])
def test_short_writes_of_small_buffers_and_padding(key: Any) -> None:
    obj = _small()
    f = TinyWrites()
    sp.dump(obj, f, key=key)
    assert bytes(f.out) == sp.dumps(obj, key=key)
    _same(sp.loads(bytes(f.out), key=key), obj)


def test_error_paths_name_keys_and_indexes() -> None:
    def local() -> None:  # pragma: no cover - never called
        pass

    with pytest.raises(sp.SerializationError, match=r"at \['a'\]\[1\]\['b'\]\[1\]: function"):
        sp.dumps({"a": [1, {"b": (2, local)}]})
    with pytest.raises(sp.SerializationError, match=r"at \[0\]\[\(1, 2\)\]"):
        sp.dumps([{(1, 2): local}])
    with pytest.raises(sp.SerializationError, match=r"at <root>: function"):
        sp.dumps(local)


def test_cycles_and_depth_are_refused() -> None:
    a: list[Any] = [1]
    a.append({"a": a})
    with pytest.raises(sp.SerializationError, match=r"at \[1\]\['a'\]: a reference cycle"):
        sp.dumps(a)
    deep: Any = 1
    for _ in range(300):
        deep = {"d": deep}
    with pytest.raises(sp.SerializationError, match="nesting deeper than 256"):
        sp.dumps(deep)
    # the same object twice is shared, not a cycle
    w = np.arange(3)
    out = sp.loads(sp.dumps({"a": w, "b": [w]}))
    assert out["a"] is out["b"][0]


def test_the_environment_record_follows_the_packages_of_the_file() -> None:
    plain = open_file(sp.dumps({"w": np.arange(3)})).manifest["env"]
    frame = open_file(sp.dumps(pd.DataFrame({"a": [1]}))).manifest["env"]
    assert set(plain["packages"]) == {"numpy"}
    assert set(frame["packages"]) == {"numpy", "pandas"}
    assert frame["packages"]["pandas"] == pd.__version__
    # the cached text is the record as json.dumps writes it
    for pkgs in (set(), {"pandas"}, {"pandas", "numpy"}):
        assert capture_json(pkgs) == json.dumps(
            capture(pkgs), separators=(",", ":"), allow_nan=True
        )
    assert json.loads(capture_json({"pandas"})) == frame


def test_write_result_is_the_dataclass() -> None:
    res = sp.dump({}, io.BytesIO())
    assert res == WriteResult(res.size, res.digest, res.n_buffers)
    assert hash(res) == hash(WriteResult(res.size, res.digest, res.n_buffers))
    with pytest.raises(AttributeError):
        res.size = 0  # type: ignore[misc]


def test_a_class_that_fakes_its_class_is_not_remembered() -> None:
    class Liar:
        @property  # type: ignore[misc]
        def __class__(self) -> type:
            return type(len)

    # it passes for a function (isinstance reads __class__), which has no name: refused,
    # every time (what one instance claims is not remembered for its class)
    for _ in range(2):
        with pytest.raises(sp.SerializationError, match="no importable name"):
            sp.dumps(Liar())


def test_metadata_cycles_are_refused() -> None:
    meta: dict[str, Any] = {}
    meta["m"] = meta
    with pytest.raises(sp.SerializationError, match="JSON"):
        sp.dumps({}, metadata=meta)
