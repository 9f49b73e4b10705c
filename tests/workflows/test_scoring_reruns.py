"""Scoring run again: "already complete", --restart, the hidden parts folder of a
``.parquet`` output removed once the file is assembled (with real kill -9 at each step
of that), and runs of model objects in the runs table and the console."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression

import safepoint as sp
from safepoint.cli.main import _register_commands, cli
from safepoint.workflows.scoring import ScoringPipeline

SCHEMA = "id: Int! @key, prediction: Float!"
COLS = [f"f{i}" for i in range(4)]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.random((200, 4)), columns=COLS)
    model = LogisticRegression().fit(X, (X.f0 + X.f1 > 1).astype(int))
    path = tmp_path_factory.mktemp("m") / "clf.sp"
    sp.dump(model, path)
    return path, model


def features(n, start=0, seed=1):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.random((n, 4)), columns=COLS)
    df.insert(0, "id", np.arange(start, start + n))
    return df


def _pipeline(model, src, out, **kw):
    p = ScoringPipeline(model, batch_size=25, **kw)
    p.write(p.apply(p.read(src)), out, schema=SCHEMA)
    return p


def _hidden(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}"))


def test_finished_parquet_output_has_no_parts_folder_and_a_rerun_does_nothing(model_file, tmp_path):
    path, model = model_file
    feats = features(100)
    feats.to_parquet(tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    r1 = _pipeline(path, tmp_path / "in.parquet", out).run()
    assert (r1.read, r1.written, r1.already_complete) == (100, 100, False)
    assert _hidden(out) == []  # the .out.parquet.parts/ folder is gone
    meta = pq.read_schema(out).metadata[b"safepoint.scoring.state"]
    assert json.loads(meta)["offsets"] == {"in.parquet": 100}
    before = out.read_bytes()

    r2 = _pipeline(path, tmp_path / "in.parquet", out).run()
    assert r2.already_complete and (r2.read, r2.written, r2.batches) == (0, 0, 0)
    assert r2.committed["read"] == 100 and r2.offsets == {"in.parquet": 100}
    assert out.read_bytes() == before and _hidden(out) == []

    r3 = _pipeline(path, tmp_path / "in.parquet", out).run(restart=True)
    assert (r3.read, r3.written, r3.already_complete) == (100, 100, False)
    got = pd.read_parquet(out).sort_values("id")
    np.testing.assert_array_equal(got["id"], feats["id"])
    np.testing.assert_array_equal(got["prediction"], model.predict(feats[COLS]))


def test_new_input_after_completion_is_appended_exactly_once(model_file, tmp_path):
    path, _ = model_file
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    features(60).to_csv(inbox / "a.csv", index=False)
    with open(inbox / "a.csv", "a") as f:
        f.write("999,x,1,2,3\n")  # a bad record: its dead letter must survive too
    out = tmp_path / "out.parquet"
    r1 = _pipeline(path, inbox, out).run()
    assert (r1.written, r1.bad) == (60, 1)
    assert _hidden(out) == [] and (tmp_path / "out.parquet.dead.jsonl").exists()

    features(40, start=60, seed=2).to_parquet(inbox / "b.parquet")
    r2 = _pipeline(path, inbox, out).run()
    assert not r2.already_complete and (r2.read, r2.written) == (40, 40)
    assert r2.resumed_from == {"a.csv": 61}
    got = pd.read_parquet(out)
    assert sorted(got["id"]) == list(range(100))
    dead = [json.loads(x) for x in (tmp_path / "out.parquet.dead.jsonl").read_text().splitlines()]
    assert [(d["source"], d["offset"]) for d in dead] == [("a.csv", 60)]
    assert _hidden(out) == []


def test_an_existing_file_not_written_by_scoring_is_not_overwritten(model_file, tmp_path):
    path, _ = model_file
    features(10).to_parquet(tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    pd.DataFrame({"precious": [1, 2]}).to_parquet(out)
    with pytest.raises(sp.SchemaError, match="not written by a scoring run"):
        _pipeline(path, tmp_path / "in.parquet", out).run()
    assert list(pd.read_parquet(out).columns) == ["precious"]
    assert _pipeline(path, tmp_path / "in.parquet", out).run(restart=True).written == 10


@pytest.mark.parametrize("out_name", ["out.jsonl", "parts"])
def test_other_outputs_say_complete_and_restart(model_file, tmp_path, out_name):
    path, _ = model_file
    features(30).to_parquet(tmp_path / "in.parquet")
    out = tmp_path / out_name
    assert _pipeline(path, tmp_path / "in.parquet", out).run().written == 30
    r = _pipeline(path, tmp_path / "in.parquet", out).run()
    assert r.already_complete and r.committed["written"] == 30
    r = _pipeline(path, tmp_path / "in.parquet", out).run(restart=True)
    assert not r.already_complete and r.written == 30
    if out_name == "parts":
        got = pd.concat(pd.read_parquet(p) for p in sorted(out.glob("part-*.parquet")))
        assert len(list((out / "_commits").glob("*.json"))) == 2  # 30 records / 25 a batch
    else:
        got = pd.read_json(out, lines=True)
    assert sorted(got["id"]) == list(range(30))


def test_cli_says_already_complete_and_restart_starts_over(model_file, tmp_path):
    path, _ = model_file
    features(70).to_parquet(tmp_path / "in.parquet")
    _register_commands()
    args = ["score", "-m", str(path), "-i", str(tmp_path / "in.parquet")]
    args += ["-o", str(tmp_path / "out.parquet"), "--schema", SCHEMA, "-q"]
    runner = CliRunner()
    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    again = runner.invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert "already complete: 70 records at offset in.parquet:70" in again.output
    assert "--restart" in again.output
    as_json = runner.invoke(cli, [*args, "--json"])
    data = json.loads(as_json.output)
    assert data["already_complete"] is True and data["committed"]["written"] == 70
    restarted = runner.invoke(cli, [*args, "--restart", "--json"])
    data = json.loads(restarted.output)
    assert (data["read"], data["written"], data["already_complete"]) == (70, 70, False)


CRASHER = textwrap.dedent(
    """
    import os, signal, sys
    from safepoint.workflows.scoring import ScoringPipeline, sinks
    model, src, out, where = sys.argv[1:5]
    real_replace = sinks.os.replace

    def replace(a, b):
        a, b = str(a), str(b)
        if where == "before-final" and b == out:
            os.kill(os.getpid(), signal.SIGKILL)  # dead letters written, file not yet
        real_replace(a, b)
        if where == "after-final" and b == out:
            os.kill(os.getpid(), signal.SIGKILL)  # file durable, folder still there
        if where == "after-rename" and ".parts.done-" in b:
            os.kill(os.getpid(), signal.SIGKILL)  # folder renamed to trash, not deleted

    sinks.os.replace = replace
    p = ScoringPipeline(model, batch_size=20, quiet=True)
    p.write(p.apply(p.read(src)), out, schema="id: Int! @key, prediction: Float!")
    r = p.run()
    print("DONE", r.read, r.already_complete)
    """
)


@pytest.mark.parametrize("where", ["before-final", "after-final", "after-rename"])
@pytest.mark.slow
def test_kill_minus_nine_while_assembling_loses_and_repeats_nothing(model_file, tmp_path, where):
    """A real SIGKILL at each step between the last commit and the removal of the parts
    folder; the next run ends with every record once, the dead letters, and no folder."""
    path, model = model_file
    feats = features(90).astype(object)
    feats.loc[5, "f1"] = "oops"
    feats.to_json(tmp_path / "in.jsonl", orient="records", lines=True)
    out = tmp_path / "out.parquet"
    script = tmp_path / "crash.py"
    script.write_text(CRASHER)
    cmd = [sys.executable, str(script), str(path), str(tmp_path / "in.jsonl"), str(out)]
    proc = subprocess.run([*cmd, where], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    leftovers = _hidden(out)
    if where == "after-rename":
        assert any(".parts.done-" in name for name in leftovers)
    else:
        assert f".{out.name}.parts" in leftovers
    proc = subprocess.run([*cmd, "none"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    # the records were all committed before the kill: the rerun scores nothing again
    assert proc.stdout.split() == ["DONE", "0", "True"]
    assert _hidden(out) == []
    got = pd.read_parquet(out).sort_values("id")
    assert got["id"].tolist() == [i for i in range(90) if i != 5]
    good = features(90).drop(index=5)
    np.testing.assert_array_equal(got["prediction"], model.predict(good[COLS]))
    dead = [json.loads(x) for x in (tmp_path / "out.parquet.dead.jsonl").read_text().splitlines()]
    assert [d["offset"] for d in dead] == [5]


def test_a_model_object_run_is_in_the_runs_table_and_the_console(model_file, tmp_path):
    from starlette.testclient import TestClient

    from safepoint.ui.app import create_app

    _, model = model_file
    store = sp.Store(tmp_path / "store")
    features(50).to_parquet(tmp_path / "in.parquet")
    p = _pipeline(model, tmp_path / "in.parquet", tmp_path / "out.parquet", store=store)
    assert p.run().written == 50
    runs = store.runs.list(kind="scoring")
    assert len(runs) == 1
    run = runs[0]
    assert run.status == "succeeded" and run.name == "score:LogisticRegression"
    assert run.state["counts"]["written"] == 50 and run.state["model"] == "LogisticRegression"

    # the CLI with a .sp file and --store records its run as well
    _register_commands()
    path, _ = model_file
    args = ["score", "-m", str(path), "--store", str(tmp_path / "store"), "-q"]
    args += ["-i", str(tmp_path / "in.parquet"), "-o", str(tmp_path / "o2"), "--schema", SCHEMA]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    names = [r.name for r in store.runs.list(kind="scoring")]
    assert names == ["score:clf.sp", "score:LogisticRegression"]
    # ... and so does one without --store, in $SAFEPOINT_STORE
    args = ["score", "-m", str(path), "-q", "-i", str(tmp_path / "in.parquet")]
    args += ["-o", str(tmp_path / "o3"), "--schema", SCHEMA]
    res = CliRunner(env={"SAFEPOINT_STORE": str(tmp_path / "store")}).invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert len(store.runs.list(kind="scoring")) == 3

    with TestClient(create_app(store), base_url="http://127.0.0.1") as client:
        page = client.get("/runs")
        assert page.status_code == 200
        assert "score:LogisticRegression" in page.text and "score:clf.sp" in page.text
        detail = client.get(f"/api/runs/{run.id}").json()
        assert detail["state"]["counts"]["written"] == 50
        assert os.fspath(run.id) in client.get(f"/runs/{run.id}").text
