"""The serializers under test, behind one interface.

Each library saves (plain, and durably: fsync before returning) and loads.
Load-only variants (``joblib-mmap``, ``safepoint-mmap``) read the file their
parent library wrote.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from typing import Any


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- pickle ----------------------------------------------------------------------------
def _pickle_save(obj: Any, path: str, durable: bool) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=5)
        if durable:
            f.flush()
            os.fsync(f.fileno())


def _pickle_load(path: str, prep: Any) -> Any:
    with open(path, "rb") as f:
        return pickle.load(f)


# -- joblib ----------------------------------------------------------------------------
def _joblib_save(obj: Any, path: str, durable: bool, compress: int = 0) -> None:
    import joblib

    joblib.dump(obj, path, compress=compress)
    if durable:
        _fsync_path(path)


def _joblib_z3_save(obj: Any, path: str, durable: bool) -> None:
    _joblib_save(obj, path, durable, compress=3)


def _joblib_load(path: str, prep: Any) -> Any:
    import joblib

    return joblib.load(path)


def _joblib_mmap_load(path: str, prep: Any) -> Any:
    import joblib

    return joblib.load(path, mmap_mode="r")


# -- skops -----------------------------------------------------------------------------
def _skops_save(obj: Any, path: str, durable: bool) -> None:
    import skops.io

    skops.io.dump(obj, path)
    if durable:
        _fsync_path(path)


def _skops_prepare(path: str) -> Any:
    # the audit (listing untrusted types) is what a careful user runs before
    # loading; it is timed separately as skops' "inspect"
    import skops.io

    return skops.io.get_untrusted_types(file=path)


def _skops_load(path: str, prep: Any) -> Any:
    import skops.io

    return skops.io.load(path, trusted=prep)


def _skops_inspect(path: str) -> Any:
    import skops.io

    return skops.io.get_untrusted_types(file=path)


# -- safepoint -------------------------------------------------------------------------
def _sp_save(obj: Any, path: str, durable: bool, compress: str | None = None) -> None:
    import safepoint as sp

    sp.dump(obj, path, durable=durable, compress=compress)


def _sp_zstd_save(obj: Any, path: str, durable: bool) -> None:
    _sp_save(obj, path, durable, compress="zstd")


def _sp_load(path: str, prep: Any) -> Any:
    import safepoint as sp

    return sp.load(path)


def _sp_mmap_load(path: str, prep: Any) -> Any:
    import safepoint as sp

    return sp.load(path, mmap=True)


def _sp_inspect(path: str) -> Any:
    import safepoint as sp

    return sp.inspect(path)


@dataclass(frozen=True)
class Lib:
    """One serializer: how it saves, loads and (optionally) inspects a file."""

    name: str
    ext: str
    load: Any
    save: Any = None
    #: the library whose file a load-only variant reads
    file_of: str | None = None
    prepare: Any = None
    inspect: Any = None
    imports: tuple[str, ...] = field(default=())

    @property
    def source(self) -> str:
        return self.file_of or self.name


LIBS: dict[str, Lib] = {
    lib.name: lib
    for lib in [
        Lib("pickle", ".pkl", _pickle_load, _pickle_save),
        Lib("joblib", ".joblib", _joblib_load, _joblib_save, imports=("joblib",)),
        Lib("joblib-mmap", ".joblib", _joblib_mmap_load, file_of="joblib", imports=("joblib",)),
        Lib("joblib-z3", ".joblib.z3", _joblib_load, _joblib_z3_save, imports=("joblib",)),
        Lib(
            "skops",
            ".skops",
            _skops_load,
            _skops_save,
            prepare=_skops_prepare,
            inspect=_skops_inspect,
            imports=("skops.io",),
        ),
        Lib("safepoint", ".sp", _sp_load, _sp_save, inspect=_sp_inspect, imports=("safepoint",)),
        Lib(
            "safepoint-mmap",
            ".sp",
            _sp_mmap_load,
            file_of="safepoint",
            imports=("safepoint",),
        ),
        Lib(
            "safepoint-zstd",
            ".sp.zst",
            _sp_load,
            _sp_zstd_save,
            imports=("safepoint",),
        ),
    ]
}
