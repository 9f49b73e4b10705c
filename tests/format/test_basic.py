"""Round trips of builtins, numpy, scipy and pandas values through the format."""

from __future__ import annotations

import io
import math
import os
import re

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sps

import safepoint as sp


def rt(obj, **kw):
    return sp.loads(sp.dumps(obj), **kw)


@pytest.mark.parametrize(
    "obj",
    [
        None,
        True,
        0,
        -1,
        2**70,
        -(2**80),
        1.5,
        float("inf"),
        "",
        "héllo\x00x",
        b"bytes",
        bytearray(b"ba"),
        3 + 4j,
        (1, "a", None),
        [1, [2, [3]]],
        {1, 2, 3},
        frozenset({"a"}),
        {"a": 1, "b": [1, 2]},
        {1: "x", (1, 2): "y"},
        slice(1, 5, 2),
        range(0, 10, 3),
        [],
        {},
        (),
    ],
)
def test_builtins(obj):
    out = rt(obj)
    assert out == obj and type(out) is type(obj)


def test_nan_float():
    assert math.isnan(rt(float("nan")))


def test_shared_references_are_kept():
    a = np.arange(5)
    inner = [1, 2]
    out = rt({"x": a, "y": a, "l1": inner, "l2": inner})
    assert out["x"] is out["y"]
    assert out["l1"] is out["l2"]


def test_cycles_are_refused_with_a_clear_error():
    a: list = []
    a.append(a)
    with pytest.raises(sp.SerializationError, match="cycle"):
        sp.dumps(a)


def test_columnar_dict_and_list():
    vocab = {f"w{i}": i for i in range(1000)}
    words = [f"t{i}" for i in range(100)]
    out = rt({"vocab": vocab, "words": words, "fl": {f"k{i}": i / 3 for i in range(50)}})
    assert out["vocab"] == vocab and out["words"] == words
    assert all(type(v) is int for v in out["vocab"].values())


@pytest.mark.parametrize(
    "dtype",
    ["<f8", "<f4", "<i1", "<u8", "?", "<c16", "<M8[ns]", "<m8[s]", "<U7", "S3", ">i4", "<f2"],
)
def test_numpy_dtypes(dtype):
    arr = np.zeros((3, 4), dtype=dtype)
    out = rt(arr)
    assert out.dtype == arr.dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


def test_numpy_layouts():
    a = np.arange(24, dtype=float).reshape(4, 6)
    for x in (a, np.asfortranarray(a), a[:, ::2], a[::-1], a.T, np.float64(3.5), np.int8(-3)):
        out = rt(x)
        np.testing.assert_array_equal(out, x)
        assert type(out) is type(x)


def test_structured_dtype():
    dt = np.dtype([("a", "<i4"), ("b", "<f8", (2,)), ("c", "S2")])
    arr = np.zeros(3, dtype=dt)
    arr["a"] = [1, 2, 3]
    out = rt(arr)
    assert out.dtype == dt
    np.testing.assert_array_equal(out, arr)


def test_string_arrays_with_missing_values():
    arr = np.array(["a", None, float("nan"), "ünï"], dtype=object)
    out = rt(arr)
    assert out.dtype == object
    assert out[0] == "a" and out[1] is None and math.isnan(out[2]) and out[3] == "ünï"
    sd = np.array(["x", "yy"], dtype=np.dtypes.StringDType())
    np.testing.assert_array_equal(rt(sd), sd)


def test_object_array_of_arrays():
    arr = np.empty(2, dtype=object)
    arr[0] = np.arange(3)
    arr[1] = np.arange(5.0)
    out = rt(arr)
    np.testing.assert_array_equal(out[1], arr[1])


def test_arbitrary_objects_in_arrays_need_trust():
    arr = np.empty(1, dtype=object)
    arr[0] = io.StringIO()
    with pytest.raises(sp.SerializationError):
        sp.dumps(arr)


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "bsr", "dia", "lil", "dok"])
@pytest.mark.parametrize("kind", [sps.csr_matrix, sps.csr_array])
def test_sparse(fmt, kind):
    m = kind(sps.random(6, 8, density=0.3, random_state=0, format="csr")).asformat(fmt)
    out = rt(m)
    assert type(out) is type(m)
    np.testing.assert_array_equal(out.toarray(), m.toarray())


def test_pandas_frame_mixed():
    df = pd.DataFrame(
        {
            "i": np.arange(5),
            "f": np.linspace(0, 1, 5),
            "s": ["a", "b", None, "d", "e"],
            "c": pd.Categorical(["x", "y", "x", "z", "y"]),
            "t": pd.date_range("2024-01-01", periods=5, tz="Europe/Paris"),
            "n": pd.array([1, None, 3, 4, 5], dtype="Int64"),
            "b": [True, False, True, True, False],
            "naive": pd.date_range("2024-01-01", periods=5),
        },
        index=pd.Index(list("vwxyz"), name="key"),
    )
    out = rt(df)
    pd.testing.assert_frame_equal(out, df)


def test_pandas_series_and_indexes():
    s = pd.Series(
        [1.0, 2.0],
        index=pd.MultiIndex.from_tuples([("a", 1), ("b", 2)], names=["x", "y"]),
        name="s",
    )
    pd.testing.assert_series_equal(rt(s), s)
    idx = pd.RangeIndex(3, 30, 3, name="r")
    pd.testing.assert_index_equal(rt(idx), idx)
    assert rt(pd.Timestamp("2024-01-01", tz="UTC")) == pd.Timestamp("2024-01-01", tz="UTC")
    assert rt(pd.NA) is pd.NA


def test_file_object_and_path(tmp_path):
    p = tmp_path / "x.sp"
    sp.dump({"a": np.ones(3)}, p)
    with open(p, "rb") as f:
        assert sp.load(f)["a"].sum() == 3
    bio = io.BytesIO()
    sp.dump([1], bio)
    bio.seek(0)
    assert sp.load(bio) == [1]


def test_mmap_is_read_only_and_lazy(tmp_path):
    p = tmp_path / "big.sp"
    big = np.arange(1 << 18, dtype=np.float64)
    sp.dump({"big": big, "small": np.arange(3)}, p)
    out = sp.load(p, mmap=True)
    assert not out["big"].flags.writeable
    assert out["small"].flags.writeable
    np.testing.assert_array_equal(out["big"], big)


def test_compression_roundtrip_and_incompressible_raw(tmp_path):
    zeros = np.zeros(1 << 16)
    noise = np.random.default_rng(0).random(1 << 16)
    b = sp.dumps({"z": zeros, "n": noise}, compress="zstd")
    info = sp.inspect(b)
    assert info.compressed_buffers == 1
    out = sp.loads(b)
    np.testing.assert_array_equal(out["z"], zeros)
    np.testing.assert_array_equal(out["n"], noise)


def test_dump_is_deterministic():
    obj = {"a": np.arange(10), "b": "x"}
    assert sp.inspect(sp.dumps(obj)).digest == sp.inspect(sp.dumps(obj)).digest


def test_functions_by_reference_only():
    out = rt({"f": np.log1p, "t": np.float64, "b": float})
    assert out["f"] is np.log1p and out["t"] is np.float64 and out["b"] is float
    with pytest.raises(sp.SerializationError, match=r"lambda|inside a function"):
        sp.dumps(lambda x: x)

    def local(x):
        return x

    with pytest.raises(sp.SerializationError, match="inside a function"):
        sp.dumps(local)


def test_metadata_must_be_json():
    with pytest.raises(sp.SerializationError, match="JSON"):
        sp.dumps(1, metadata={"x": object()})
    assert sp.inspect(sp.dumps(1, metadata={"x": [1, "a"]})).metadata == {"x": [1, "a"]}


def test_saved_file_follows_the_umask(tmp_path):
    import stat

    old = os.umask(0o027)
    try:
        sp.dump([1], tmp_path / "m.sp")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "m.sp").st_mode) == 0o640


def test_dump_into_a_named_pipe_streams_and_leaves_the_pipe(tmp_path):
    """An existing pipe or character device (/dev/null, /dev/stdout) is written into,
    as pickle.dump(obj, open(path, "wb")) would: a rename over it would put a regular
    file in its place (sp.dump("/dev/null") once did)."""
    import stat
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    res = sp.dump({"w": np.arange(1000)}, fifo)
    reader.join(timeout=60)
    assert not reader.is_alive()
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert len(got[0]) == res.size
    np.testing.assert_array_equal(sp.loads(got[0])["w"], np.arange(1000))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


def test_dump_over_a_folder_is_refused_before_writing(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "keep.txt").write_text("x")
    with pytest.raises(sp.NotAFileError, match="is a folder, not a file") as info:
        sp.dump([1], folder)
    assert isinstance(info.value, OSError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]


def test_dump_through_a_symlink_to_a_pipe_streams(tmp_path):
    """Symlinks are followed to what they name (/dev/stdout -> /proc/self/fd/1)."""
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "out.sp"
    link.symlink_to(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    sp.dump([1, 2], link)
    reader.join(timeout=60)
    assert link.is_symlink() and sp.loads(got[0]) == [1, 2]


def test_leftover_temps_names_only_what_temp_beside_made(tmp_path):
    from safepoint._io import leftover_temps, temp_beside

    target = tmp_path / "out.parquet"
    fd, tmp = temp_beside(str(target), ".out.parquet.")
    os.close(fd)
    other_fd, other = temp_beside(str(tmp_path / "other"), ".other.")
    os.close(other_fd)
    # names a user or another writer may have: none of them is ours
    for name in (".out.parquet.parts", ".out.parquet.notes.tmp", "out.parquet.abcdefgh.tmp"):
        (tmp_path / name).write_text("x")
    assert leftover_temps(str(target), ".out.parquet.") == [tmp]
    assert leftover_temps(str(tmp_path / "other"), ".other.") == [other]
    assert leftover_temps(str(tmp_path / "missing" / "x"), ".x.") == []


def test_temp_beside_creates_a_new_file_with_the_mode_of_a_new_file(tmp_path, monkeypatch):
    """The temporary file gets 0666 less the umask from the kernel (no umask read), is
    created exclusively: a file or symlink planted under the name drawn is never opened
    or followed, the next name is drawn instead."""
    from safepoint import _io

    victim = tmp_path / "victim"
    victim.write_text("keep")
    names = iter(["aaaaaaaa", "bbbbbbbb", "cccccccc"])
    monkeypatch.setattr(_io, "_temp_name", lambda: next(names))
    (tmp_path / ".out.aaaaaaaa.tmp").symlink_to(victim)
    (tmp_path / ".out.bbbbbbbb.tmp").write_text("someone else's")
    old = os.umask(0o027)
    try:
        fd, tmp = _io.temp_beside(str(tmp_path / "out"), ".out.")
    finally:
        os.umask(old)
    os.write(fd, b"new")
    os.close(fd)
    assert tmp == str(tmp_path / ".out.cccccccc.tmp")
    assert os.stat(tmp).st_mode & 0o777 == 0o640
    assert victim.read_text() == "keep"
    assert (tmp_path / ".out.bbbbbbbb.tmp").read_text() == "someone else's"
    # the names drawn for real: eight characters a leftover scan recognises
    monkeypatch.undo()
    fd, real = _io.temp_beside(str(tmp_path / "out"), ".out.")
    os.close(fd)
    assert re.fullmatch(r"\.out\.[a-z2-7]{8}\.tmp", os.path.basename(real))
    assert real in _io.leftover_temps(str(tmp_path / "out"), ".out.")


def test_loading_a_pipe_or_device_path_is_a_clear_error(tmp_path):
    """A path must name a regular file (read by random access); /dev/zero would never
    end. The bytes of a pipe can still be loaded through an open file object."""
    import contextlib
    import threading

    for path in ("/dev/zero", "/dev/null"):
        for fn in (sp.load, sp.inspect):
            with pytest.raises(sp.FormatError, match="is a character device, not a regular"):
                fn(path)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    data = sp.dumps({"w": np.arange(5)})

    def refused_write() -> None:
        # the load closes the pipe unread: the writer may see a broken pipe
        with contextlib.suppress(BrokenPipeError):
            fifo.write_bytes(data)

    writer = threading.Thread(target=refused_write)
    writer.start()
    with pytest.raises(sp.FormatError, match="is a named pipe, not a regular file"):
        sp.load(fifo)
    writer.join(timeout=60)
    assert not writer.is_alive()
    writer = threading.Thread(target=lambda: fifo.write_bytes(data))
    writer.start()
    with open(fifo, "rb") as f:
        np.testing.assert_array_equal(sp.load(f)["w"], np.arange(5))
    writer.join(timeout=60)


@pytest.mark.parametrize("target", ["/proc/self/fd/1", "/dev/fd/1"])
def test_dump_to_stdout_redirected_to_a_file(tmp_path, target):
    """sp.dump(obj, "/dev/stdout") with the output redirected to a file writes into
    the descriptor (a rename would replace the system's /dev/stdout link; these two
    spellings of it cannot be renamed over, so a regression fails instead of harming
    the machine)."""
    import subprocess
    import sys

    out = tmp_path / "out.sp"
    code = f"import safepoint as sp; sp.dump({{'a': [1, 2]}}, {target!r})"
    with open(out, "wb") as f:
        subprocess.run([sys.executable, "-c", code], stdout=f, check=True, timeout=120)
    assert sp.load(out) == {"a": [1, 2]}


def test_dump_over_a_planted_symlink_replaces_the_link_not_its_target(tmp_path):
    """A link at the output path (planted in a shared folder, say) is replaced by the
    new file: the file it named is untouched, as with mv, not written through."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    link = tmp_path / "model.sp"
    link.symlink_to(victim)
    sp.dump([1], link)
    assert victim.read_text() == "keep"
    assert not link.is_symlink() and sp.load(link) == [1]
