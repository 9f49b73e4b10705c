"""The store commands of the CLI: click's CliRunner, plus one real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import safepoint as sp
from safepoint.cli.main import _register_commands, cli

_register_commands()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: Any) -> dict[str, Any]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SAFEPOINT_STORE", raising=False)
    monkeypatch.delenv("SAFEPOINT_METADATA", raising=False)
    from sklearn.linear_model import LogisticRegression

    X = np.random.RandomState(0).normal(size=(50, 3))
    model = LogisticRegression().fit(X, X[:, 0] > 0)
    sp.dump(model, tmp_path / "m.sp", golden=X[:5])
    sp.dump({"w": np.arange(4)}, tmp_path / "w.sp")
    return {"root": tmp_path, "X": X, "model": model}


def run(*args: str, code: int = 0) -> Any:
    res = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert res.exit_code == code, res.output
    return res


def jrun(*args: str) -> Any:
    return json.loads(run(*args, "--json").output)


def test_put_ls_show_get_alias_log(env: dict[str, Any]) -> None:
    root = env["root"]
    run("put", "w.sp", "fraud/data")
    out = jrun(
        "put",
        "m.sp",
        "fraud/scorer",
        "--alias",
        "staging",
        "--metric",
        "auc=0.9",
        "--meta",
        'owner="ds"',
        "--tag",
        "candidate",
        "--parent",
        "fraud/data@1",
    )
    assert (out["name"], out["version"], out["aliases"]) == ("fraud/scorer", 1, ["staging"])
    assert out["metrics"] == {"auc": 0.9} and out["metadata"]["owner"] == "ds"
    run("put", "w.sp", "fraud/scorer")
    rows = jrun("ls")
    assert [(r["name"], r["versions"], r["aliases"]) for r in rows] == [
        ("fraud/data", 1, {}),
        ("fraud/scorer", 2, {"staging": 1}),
    ]
    assert "fraud/scorer" in run("ls").output
    shown = jrun("show", "fraud/scorer@staging")
    assert shown["version"] == 1 and shown["parents"] == ["fraud/data@1"]
    assert "auc" in run("show", "fraud/scorer@staging").output
    assert [v["version"] for v in jrun("show", "fraud/scorer")["versions"]] == [1, 2]
    # get writes the very file that was put
    got = jrun("get", "fraud/scorer@staging", "out.sp")
    assert (root / "out.sp").read_bytes() == (root / "m.sp").read_bytes()
    assert got["digest"] == sp.inspect(root / "m.sp").digest
    run("get", "fraud/scorer@staging", "out.sp", code=2)  # exists: needs --force
    run("get", "fraud/scorer", "out.sp", "--force")
    # alias: compare-and-swap
    res = run("alias", "fraud/scorer", "staging", "2", code=1)
    assert "--expected 1" in res.output and "expected=1" not in res.output
    assert jrun("alias", "fraud/scorer", "staging", "2", "--expected", "1")["version"] == 2
    res = run("alias", "fraud/scorer", "staging", "1", "--expected", "1", code=1)
    assert "moved since" in res.output
    actions = [e["action"] for e in jrun("log", "fraud/scorer")]
    assert actions == ["alias", "put", "alias", "put"]
    assert "fraud/scorer@2" in run("log").output


def test_inspect_and_verify_store_refs(env: dict[str, Any]) -> None:
    run("put", "m.sp", "fraud/scorer", "--alias", "prod")
    info = jrun("inspect", "fraud/scorer@prod")
    assert info["root_type"].endswith("LogisticRegression")
    rep = jrun("verify", "fraud/scorer@prod")
    assert rep["ok"] and rep["golden"]
    # a file of that path still wins, and a missing file is still reported as one
    assert jrun("inspect", "m.sp")["root_type"].endswith("LogisticRegression")
    res = run("inspect", "nothing-here.sp", code=1)
    assert "nothing-here.sp" in res.output


def test_copy_rm_gc_runs(env: dict[str, Any]) -> None:
    root = env["root"]
    run("put", "w.sp", "a/w", "--metric", "auc=0.5")
    run("put", "m.sp", "a/w", "--metric", "auc=0.9", "--alias", "prod")
    run("put", "w.sp", "a/w", "--metric", "auc=0.1")
    team = str(root / "team")
    out = jrun("copy", "a/w@prod", "--to", team, "--alias", "candidate", "--as", "b/w")
    assert (out["name"], out["aliases"], out["metrics"]) == ("b/w", ["candidate"], {"auc": 0.9})
    assert [r["name"] for r in jrun("ls", "--store", team)] == ["b/w"]
    assert jrun("gc", "--keep-last", "1", "--dry-run")["deleted_versions"] == ["a/w@1"]
    res = run("rm", "a/w@prod", code=1)
    assert "prod" in res.output
    assert jrun("rm", "a/w@1")["deleted"] == [1]
    rep = jrun("gc", "--grace", "0")
    assert len(rep["deleted_blobs"]) == 0  # w.sp's blob is still used by version 3
    assert (
        "would delete"
        in run("gc", "--keep-best", "auc:max", "--keep-last", "0", "--dry-run").output
    )
    run("gc", "--keep-best", "auc:best", code=2)
    store = sp.Store(root / ".safepoint")
    store.runs.start("search", "a/grid").update(progress=0.5)
    rows = jrun("runs", "--kind", "search")
    assert [(r["name"], r["progress"]) for r in rows] == [("a/grid", 0.5)]
    assert "a/grid" in run("runs").output


def test_bad_input_messages(env: dict[str, Any]) -> None:
    res = run("show", "a/../b", code=1)
    assert "'..'" in res.output
    run("put", "w.sp", "a/w")
    assert "no model named 'zz/zz'" in run("show", "zz/zz", code=1).output
    assert "no alias" in run("show", "a/w@prod", code=1).output
    assert "no version 9" in run("get", "a/w@9", "x.sp", code=1).output
    assert "no such file" in run("put", "missing.sp", "a/w", code=1).output
    (env["root"] / "junk.sp").write_bytes(b"not a model at all, clearly")
    assert "not a valid safepoint file" in run("put", "junk.sp", "a/w", code=1).output
    assert [v["version"] for v in jrun("show", "a/w")["versions"]] == [1]
    # read-only commands do not create a store where there is none
    res = run("ls", "--store", str(env["root"] / "nowhere"), code=1)
    assert "no store at" in res.output
    assert not (env["root"] / "nowhere").exists()
    assert "--meta" in run("put", "w.sp", "a/w", "--meta", "novalue", code=2).output


@pytest.mark.slow
def test_real_subprocess(env: dict[str, Any]) -> None:
    root = env["root"]
    e = {**os.environ, "SAFEPOINT_STORE": str(root / "sub-store")}
    cmd = [sys.executable, "-m", "safepoint.cli"]
    put = subprocess.run(
        [*cmd, "put", "m.sp", "proj/m", "--alias", "prod", "--json"],
        cwd=root,
        env=e,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert put.returncode == 0, put.stderr
    assert json.loads(put.stdout)["version"] == 1
    bad = subprocess.run(
        [*cmd, "show", "proj/m@nope"],
        cwd=root,
        env=e,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1 and "no alias 'nope'" in bad.stderr
    assert "Traceback" not in bad.stderr
    model = sp.Store(root / "sub-store").get("proj/m", "prod")
    np.testing.assert_array_equal(model.predict(env["X"]), env["model"].predict(env["X"]))


def test_ls_hides_step_outputs_and_ledgers_unless_all(env: dict[str, Any]) -> None:
    run("put", "w.sp", "a/model")
    store = sp.Store(env["root"] / ".safepoint")
    store.put("flow/v1/prep", {"x": 1}, tags={"safepoint.step": "{}"})
    store.checkpointer("a/search").set("search/meta", {"format": "x"})
    store.checkpointer("a/state").set("offset", 3)
    assert [r["name"] for r in jrun("ls")] == ["a/model"]
    out = run("ls").output
    assert "flow/v1/prep" not in out and "1 step output(s) not shown" in out
    rows = {r["name"]: r["kind"] for r in jrun("ls", "--all")}
    assert rows == {
        "a/model": "model",
        "flow/v1/prep": "step",
        "a/search": "search-ledger",
        "a/state": "checkpointer",
    }
    assert "search-ledger" in run("ls", "--all").output


def test_alias_delete_latest_edit_and_copy_twice(env: dict[str, Any]) -> None:
    root = env["root"]
    run("put", "w.sp", "a/w", "--alias", "prod")
    run("put", "m.sp", "a/w")
    assert jrun("alias", "a/w", "stage", "latest")["version"] == 2
    assert jrun("show", "a/w@latest")["version"] == 2
    assert "removed a/w@stage" in run("alias", "a/w", "stage", "--delete").output
    res = run("alias", "a/w", "prod", "--delete", "--expected", "2", code=1)
    assert "not version 2" in res.output
    assert jrun("alias", "a/w", "prod", "--delete", "--expected", "1")["version"] == 1
    assert jrun("show", "a/w@1")["aliases"] == []
    run("alias", "a/w", "prod", code=2)  # no VERSION, no --delete: usage error
    assert [e["action"] for e in jrun("log", "a/w", "--action", "unalias")] == ["unalias"] * 2
    out = jrun("edit", "a/w@1", "--metric", "auc=0.7", "--tag", "golden", "--description", "v1")
    assert (out["metrics"], out["tags"], out["description"]) == ({"auc": 0.7}, {"golden": ""}, "v1")
    assert "about" in run("show", "a/w@1").output
    run("edit", "a/w@1", code=2)  # nothing to change
    team = str(root / "team")
    first = jrun("copy", "a/w@1", "--to", team)
    assert first["copied"] and first["version"] == 1
    res = run("copy", "a/w@1", "--to", team)
    assert "nothing copied" in res.output
    assert [v["version"] for v in jrun("show", "a/w", "--store", team)["versions"]] == [1]
    assert jrun("rm", "a/w@latest")["deleted"] == [2]  # one version, not all of them


def test_get_writes_through_a_fresh_exclusive_temp_file(env: dict[str, Any]) -> None:
    root = env["root"]
    run("put", "m.sp", "a/m")
    victim = root / "victim.txt"
    victim.write_text("keep me")
    # a symlink planted where a fixed temporary name would be is never followed
    (root / ".out.sp.sp-tmp").symlink_to(victim)
    run("get", "a/m", "out.sp")
    assert victim.read_text() == "keep me"
    assert (root / "out.sp").read_bytes() == (root / "m.sp").read_bytes()
    assert not [p for p in os.listdir(root) if p.startswith(".out.sp.") and p != ".out.sp.sp-tmp"]


def test_read_only_commands_never_create_a_store(env: dict[str, Any]) -> None:
    root = env["root"]
    typo = root / "typo-store"
    for args in (["ls"], ["show", "a/m"], ["log"], ["runs"], ["check"], ["gc", "--dry-run"]):
        res = run(*args, "--store", str(typo), code=1)
        assert "no store at" in res.output, args
    assert not typo.exists()
    res = CliRunner().invoke(cli, ["ui", "--store", str(typo), "--port", "1"])
    assert res.exit_code == 1 and "no store at" in res.output
    assert not typo.exists()
