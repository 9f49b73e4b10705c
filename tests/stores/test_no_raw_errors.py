"""Every public method of the store answers odd arguments with a SafepointError.

A sweep: each method, each argument position that users fill, a list of values of the
wrong type, out of range or with a NUL. Any exception that is not a SafepointError (a
TypeError from the database driver, an OverflowError, ...) fails the test.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import safepoint as sp
from safepoint.errors import SafepointError

WEIRD: list[Any] = [
    None,
    5,
    -1,
    1.5,
    "x",
    "",
    "a/m",
    "a/m@prod",
    "\x00",
    b"x",
    [],
    {},
    object(),
    float("nan"),
    2**70,
    True,
    ("a",),
    {"a": object()},
]


def _calls(s: sp.Store) -> dict[str, Callable[[Any], Any]]:
    ck = s.checkpointer("a/c")
    run = s.runs.start("steps", "a/r")
    return {
        "Store": lambda a: sp.Store(a),
        "get.version": lambda a: s.get("a/m", a),
        "get.name": lambda a: s.get(a),
        "info": lambda a: s.info(a),
        "versions": lambda a: s.versions(a),
        "models.prefix": lambda a: s.models(a),
        "models.kind": lambda a: s.models(kind=a),
        "summary.kind": lambda a: s.summary(kind=a),
        "aliases": lambda a: s.aliases(a),
        "set_alias.alias": lambda a: s.set_alias("a/m", a, 1),
        "set_alias.version": lambda a: s.set_alias("a/m", "x1", a),
        "set_alias.expected": lambda a: s.set_alias("a/m", "prod", 1, expected=a),
        "delete_alias": lambda a: s.delete_alias("a/m", "zz", expected=a),
        "edit.metrics": lambda a: s.edit("a/m@1", metrics=a),
        "edit.tags": lambda a: s.edit("a/m@1", tags=a),
        "edit.description": lambda a: s.edit("a/m@1", description=a),
        "edit.remove_tags": lambda a: s.edit("a/m@1", remove_tags=a),
        "put.metadata": lambda a: s.put("a/n", 1, metadata=a),
        "put.metrics": lambda a: s.put("a/n", 1, metrics=a),
        "put.tags": lambda a: s.put("a/n", 1, tags=a),
        "put.parents": lambda a: s.put("a/n", 1, parents=a),
        "put.data_digest": lambda a: s.put("a/n", 1, data_digest=a),
        "put.run_id": lambda a: s.put("a/n", 1, run_id=a),
        "put.alias": lambda a: s.put("a/n", 1, alias=a),
        "put.description": lambda a: s.put("a/n", 1, description=a),
        "put_file": lambda a: s.put_file("a/n", a),
        "delete.version": lambda a: s.delete("a/zz", a),
        "lineage": lambda a: s.lineage("a/m", a),
        "find.data_digest": lambda a: s.find(data_digest=a),
        "find.parent": lambda a: s.find(parent=a),
        "find.tag": lambda a: s.find(tag=a),
        "find.run_id": lambda a: s.find(run_id=a),
        "log.name": lambda a: s.log(a),
        "log.limit": lambda a: s.log(limit=a),
        "log.action": lambda a: s.log(action=a),
        "gc.keep_last": lambda a: s.gc(keep_last=a, dry_run=True),
        "gc.grace": lambda a: s.gc(grace=a, dry_run=True),
        "gc.keep_best": lambda a: s.gc(keep_best=a, dry_run=True),
        "copy.to": lambda a: s.copy("a/m", to=a),
        "copy.new_name": lambda a: s.copy("a/m", to=s, new_name=a),
        "inspect": lambda a: s.inspect(a),
        "verify": lambda a: s.verify(a),
        "last_verify": lambda a: s.last_verify("a/m", a),
        "checkpointer.name": lambda a: s.checkpointer(a),
        "checkpointer.set.key": lambda a: ck.set(a, 1),
        "checkpointer.get": lambda a: ck.get(a),
        "checkpointer.delete": lambda a: ck.delete(a),
        "checkpointer.info": lambda a: ck.info(a),
        "runs.start.kind": lambda a: s.runs.start(a, "n"),
        "runs.start.name": lambda a: s.runs.start("steps", a),
        "runs.start.state": lambda a: s.runs.start("steps", "n", state=a),
        "runs.start.run_id": lambda a: s.runs.start("steps", "n", run_id=a),
        "runs.get": lambda a: s.runs.get(a),
        "runs.list.limit": lambda a: s.runs.list(limit=a),
        "runs.list.name": lambda a: s.runs.list(name=a),
        "runs.list.status": lambda a: s.runs.list(status=a),
        "runs.delete": lambda a: s.runs.delete(a),
        "run.update.progress": lambda a: run.update(progress=a),
        "run.update.state": lambda a: run.update(state=a),
        "run.update.status": lambda a: run.update(status=a),
        "check.grace": lambda a: s.check(grace=a, verify_blobs=False),
    }


@pytest.fixture(scope="module")
def calls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Callable[[Any], Any]]:
    store = sp.Store(Path(tmp_path_factory.mktemp("sweep")) / "s")
    store.put("a/m", {"x": 1}, alias="prod")
    return _calls(store)


@pytest.mark.slow
def test_every_public_method_answers_bad_arguments_with_a_safepoint_error(
    calls: dict[str, Callable[[Any], Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # values such as "x" are valid store folders: Store("x") and copy(to="x") create one
    # in the working directory, which must be a throwaway one
    monkeypatch.chdir(tmp_path)
    raw = []
    for name, call in calls.items():
        for value in WEIRD:
            try:
                call(value)
            except SafepointError:
                pass
            except Exception as exc:
                raw.append(f"{name}({value!r}): {type(exc).__name__}: {exc}"[:160])
    assert raw == []
