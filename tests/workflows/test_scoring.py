"""The scoring pipeline on files: schema, bad records, dedup, signature checks,
per-record and batch functions, and exactly-once under kill -9."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression

import safepoint as sp
from safepoint.workflows.scoring import Schema, ScoringPipeline

SCHEMA = """
  type Predictions @schema {
    id: Int! @key
    prediction: Float!
  }
"""
FULL = os.environ.get("SAFEPOINT_FULL") == "1"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.random((500, 10)), columns=[f"f{i}" for i in range(10)])
    y = (X.f0 + X.f1 > 1).astype(int)
    model = LogisticRegression().fit(X, y)
    path = tmp_path_factory.mktemp("m") / "clf.sp"
    sp.dump(model, path, golden=X.head(5))
    return path, model


def features(n: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.random((n, 10)), columns=[f"f{i}" for i in range(10)])
    df.insert(0, "id", np.arange(n))
    return df


def test_schema_forms_are_equivalent_and_bad_ones_are_clear():
    a = Schema.parse(SCHEMA)
    b = Schema.parse("id: int! @key, prediction: float!")
    c = Schema({"id": "int!", "prediction": "float!"}, key="id")
    assert a == b == c and a.key == "id"
    assert not a.fields[1].nullable
    with pytest.raises(sp.SchemaError, match="unknown type"):
        Schema.parse("id: Integer!")
    with pytest.raises(sp.SchemaError, match="cannot parse"):
        Schema.parse("id Int!")
    with pytest.raises(sp.SchemaError, match="key"):
        Schema({"a": "int"}, key="b")


def test_parquet_to_parquet_matches_model(model_file, tmp_path):
    path, model = model_file
    feats = features(1000)
    feats.to_parquet(tmp_path / "in.parquet")
    p = ScoringPipeline(path, batch_size=128)
    p.write(p.apply(p.read(tmp_path / "in.parquet")), tmp_path / "out.parquet", schema=SCHEMA)
    report = p.run()
    assert (report.read, report.written, report.bad) == (1000, 1000, 0)
    out = pd.read_parquet(tmp_path / "out.parquet").sort_values("id")
    expected = model.predict(feats[[f"f{i}" for i in range(10)]])
    np.testing.assert_array_equal(out["prediction"].to_numpy(), expected)
    assert pq.read_schema(tmp_path / "out.parquet").field("id").type == "int64"


def test_bad_records_go_to_dead_letters_and_are_counted(model_file, tmp_path):
    path, _ = model_file
    feats = features(30).astype(object)
    feats.loc[3, "f2"] = "abc"
    feats.to_csv(tmp_path / "in.csv", index=False)
    with open(tmp_path / "in.csv", "a") as f:
        f.write("1,2,3\n")  # malformed line
    p = ScoringPipeline(path)
    p.write(p.apply(p.read(tmp_path / "in.csv")), tmp_path / "out.jsonl", schema=SCHEMA)
    report = p.run()
    assert report.read == 31 and report.written == 29 and report.bad == 2
    dead = [json.loads(x) for x in (tmp_path / "out.jsonl.dead.jsonl").read_text().splitlines()]
    assert {d["offset"] for d in dead} == {3, 30}
    assert any("not a number" in d["error"] for d in dead)
    ids = [json.loads(x)["id"] for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(ids) == [i for i in range(30) if i != 3]


def test_on_error_raise_and_skip(model_file, tmp_path):
    path, _ = model_file
    lines = [json.dumps({"id": i, **{f"f{j}": 0.5 for j in range(10)}}) for i in range(5)]
    lines.insert(2, "{not json")
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    p = ScoringPipeline(path, on_error="raise")
    p.write(p.apply(p.read(tmp_path / "in.jsonl")), tmp_path / "o1", schema=SCHEMA)
    with pytest.raises(sp.SchemaError, match="malformed JSON"):
        p.run()
    p = ScoringPipeline(path, on_error="skip")
    p.write(p.apply(p.read(tmp_path / "in.jsonl")), tmp_path / "o2", schema=SCHEMA)
    r = p.run()
    assert (r.read, r.written, r.bad) == (6, 5, 1)


def test_missing_feature_column_is_refused_before_scoring(model_file, tmp_path):
    path, _ = model_file
    features(10).drop(columns=["f3"]).to_parquet(tmp_path / "in.parquet")
    p = ScoringPipeline(path)
    p.write(p.apply(p.read(tmp_path / "in.parquet")), tmp_path / "out", schema=SCHEMA)
    with pytest.raises(sp.SchemaError, match="f3"):
        p.run()
    assert not list((tmp_path / "out").glob("part-*"))


def test_key_deduplicates(model_file, tmp_path):
    path, _ = model_file
    feats = pd.concat([features(10), features(10)])
    feats.to_parquet(tmp_path / "in.parquet")
    p = ScoringPipeline(path, batch_size=4)
    p.write(p.apply(p.read(tmp_path / "in.parquet")), tmp_path / "out.parquet", schema=SCHEMA)
    r = p.run()
    assert r.written == 10 and r.duplicates == 10
    assert sorted(pd.read_parquet(tmp_path / "out.parquet")["id"]) == list(range(10))


def test_seed_style_per_record_generator_and_async(model_file, tmp_path):
    path, model = model_file
    features(50).to_parquet(tmp_path / "in.parquet")

    def predict_outcome(record, clf):
        X = pd.DataFrame(
            [[record[f"f{i}"] for i in range(10)]], columns=[f"f{i}" for i in range(10)]
        )
        yield {"id": record["id"], "prediction": float(clf.predict_proba(X)[0][0])}

    async def predict_async(record, clf):
        await asyncio.sleep(0)
        return {"id": record["id"], "prediction": 1.0}

    for fn, name in ((predict_outcome, "gen"), (predict_async, "async")):
        p = ScoringPipeline(path, batch_size=16)
        p.write(
            p.apply(p.read(tmp_path / "in.parquet"), fn),
            tmp_path / f"{name}.parquet",
            schema=SCHEMA,
        )
        assert p.run().written == 50
    out = pd.read_parquet(tmp_path / "gen.parquet").sort_values("id")
    feats = features(50)[[f"f{i}" for i in range(10)]]
    np.testing.assert_allclose(out["prediction"], model.predict_proba(feats)[:, 0])


def test_batch_function_and_per_record_errors(model_file, tmp_path):
    path, _ = model_file
    features(20).to_parquet(tmp_path / "in.parquet")

    def fails_on_seven(df, clf):
        if 7 in df["id"].to_numpy():
            raise ValueError("seven is unlucky")
        return pd.DataFrame({"id": df["id"], "prediction": clf.predict(df.drop(columns="id"))})

    p = ScoringPipeline(path)
    p.write(
        p.apply(p.read(tmp_path / "in.parquet"), fails_on_seven, batch=True),
        tmp_path / "out",
        schema=SCHEMA,
    )
    r = p.run()
    assert (r.written, r.bad) == (19, 1)


@pytest.mark.slow
def test_folder_source_picks_up_new_files(model_file, tmp_path):
    path, _ = model_file
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    features(10).to_parquet(inbox / "a.parquet")
    p = ScoringPipeline(path)
    p.write(p.apply(p.read(inbox, follow=True, idle_timeout=1.5)), tmp_path / "out", schema=SCHEMA)

    def later():
        time.sleep(0.5)
        feats = features(10)
        feats["id"] += 100
        feats.to_parquet(inbox / ".b.parquet")
        os.replace(inbox / ".b.parquet", inbox / "b.parquet")

    import threading

    t = threading.Thread(target=later)
    t.start()
    r = p.run()
    t.join()
    assert r.written == 20


WORKER = textwrap.dedent(
    """
    import sys, time
    import pandas as pd
    from safepoint.workflows.scoring import ScoringPipeline
    model, src, out = sys.argv[1:4]

    def slow(df, clf):
        time.sleep(0.02)
        return pd.DataFrame({"id": df["id"], "prediction": clf.predict(df.drop(columns="id"))})

    p = ScoringPipeline(model, batch_size=37, quiet=True)
    p.write(p.apply(p.read(src), slow, batch=True), out, schema=sys.argv[4])
    p.run()
    print("DONE")
    """
)


def test_parquet_resumes_from_every_offset(tmp_path):
    """A resumed Parquet source yields exactly the records from the committed offset
    on, whatever the row groups' sizes (a short last group once went missing when
    the job resumed inside an earlier group)."""
    import pyarrow as pa

    from safepoint.workflows.scoring.sources import open_source

    sizes = [5, 17, 1, 17, 9, 3]
    n = sum(sizes)
    path = tmp_path / "in.parquet"
    ids = np.arange(n)
    with pq.ParquetWriter(path, pa.schema([("id", pa.int64())])) as w:
        lo = 0
        for k in sizes:
            w.write_table(pa.table({"id": ids[lo : lo + k]}))
            lo += k
    assert [pq.ParquetFile(path).metadata.row_group(i).num_rows for i in range(6)] == sizes
    source = open_source(path)
    for batch_size in (1, 4, 37):
        for start in range(n + 1):
            batches = list(source.batches({"in.parquet": start}, batch_size))
            got = np.concatenate([b.frame["id"].to_numpy() for b in batches] or [ids[:0]])
            np.testing.assert_array_equal(got, ids[start:], err_msg=f"from {start}")
            # offsets chain: each batch starts where the previous one ended
            ends = [start] + [b.end for b in batches]
            assert [b.start for b in batches] == ends[:-1] and ends[-1] == n
            for b in batches:
                assert b.frame.index.tolist() == list(range(b.start, b.end))


@pytest.mark.parametrize("out_name", ["out.parquet", "out.jsonl", "parts"])
@pytest.mark.slow
def test_kill_minus_nine_exactly_once(model_file, tmp_path, out_name):
    """kill -9 at random instants, restart until done: every id exactly once."""
    path, model = model_file
    n = 1500
    feats = features(n)
    feats.to_parquet(tmp_path / "in.parquet", row_group_size=200)
    out = tmp_path / out_name
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    rng = random.Random(42)
    kills = 0
    for _ in range(40 if FULL else 12):
        proc = subprocess.Popen(
            [
                sys.executable,
                str(script),
                str(path),
                str(tmp_path / "in.parquet"),
                str(out),
                SCHEMA,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            proc.wait(timeout=rng.uniform(0.6, 1.6))
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            continue
        stdout, stderr = proc.communicate()
        assert proc.returncode == 0, stderr
        if "DONE" in stdout:
            break
    else:
        proc = subprocess.run(
            [
                sys.executable,
                str(script),
                str(path),
                str(tmp_path / "in.parquet"),
                str(out),
                SCHEMA,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
    assert kills >= 1, "the test never interrupted the job; make the worker slower"
    if out_name == "out.jsonl":
        rows = [json.loads(x) for x in out.read_text().splitlines()]
        got = pd.DataFrame(rows)
    elif out_name == "parts":
        got = pd.concat(pd.read_parquet(p) for p in sorted(out.glob("part-*.parquet")))
    else:
        got = pd.read_parquet(out)
    ids = got["id"].to_numpy()
    assert len(ids) == n and len(set(ids.tolist())) == n, "a record was lost or written twice"
    got = got.sort_values("id")
    np.testing.assert_array_equal(
        got["prediction"].to_numpy(), model.predict(feats.drop(columns="id"))
    )


@pytest.mark.slow
def test_stdout_sink_is_best_effort(model_file, tmp_path):
    path, _ = model_file
    features(5).to_parquet(tmp_path / "in.parquet")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            from safepoint.workflows.scoring import ScoringPipeline
            p = ScoringPipeline({str(path)!r}, quiet=True)
            p.write(p.apply(p.read({str(tmp_path / "in.parquet")!r})), "-",
                    schema="id: int! @key, prediction: float!")
            r = p.run()
            assert r.exactly_once is False
        """),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [r["id"] for r in rows] == list(range(5))


def test_bad_arguments_are_safepoint_errors(model_file, tmp_path):
    path, _ = model_file
    with pytest.raises(sp.SchemaError):
        ScoringPipeline(path, batch_size=0)
    with pytest.raises(sp.SchemaError):
        ScoringPipeline(path, on_error="ignore")
    with pytest.raises(sp.NotFoundError):
        ScoringPipeline(tmp_path / "missing.sp")
    p = ScoringPipeline(path)
    with pytest.raises(sp.NotFoundError):
        p.read(tmp_path / "nope.parquet")
    with pytest.raises(sp.SchemaError, match="format"):
        (tmp_path / "x.weird").write_text("")
        p.read(tmp_path / "x.weird")
    with pytest.raises(sp.SchemaError, match="read"):
        ScoringPipeline(path).run()


def test_path_like_accepted(model_file, tmp_path):
    path, _ = model_file
    features(3).to_parquet(tmp_path / "in.parquet")
    p = ScoringPipeline(Path(path))
    p.write(p.apply(p.read(Path(tmp_path / "in.parquet"))), Path(tmp_path / "o"), schema=SCHEMA)
    assert p.run().written == 3


def test_builtin_scorers_are_declared_as_they_are() -> None:
    """frameworks.BUILTIN_SCORERS routes models and stored types to the Spark and H2O
    scorers without importing them: its copy of their prefixes must be theirs."""
    import importlib

    from safepoint.workflows.scoring import frameworks

    assert {b[0] for b in frameworks.BUILTIN_SCORERS} == {"spark", "h2o"}
    for name, where, attr, modules, stored in frameworks.BUILTIN_SCORERS:
        scorer = getattr(importlib.import_module(where, "safepoint.workflows.scoring"), attr)
        assert (scorer.name, scorer.modules, scorer.stored_types) == (name, modules, stored)
    # a scikit-learn model is nobody's: no built-in scorer is registered for it
    assert frameworks.scorer_for(LogisticRegression()) is None
    assert frameworks._concerned(["sklearn.linear_model._logistic.LogisticRegression"]) == []


def test_sink_files_are_written_through_a_fresh_temporary_file(tmp_path, new_file_mode):
    """A sink's part, dead-letter and commit files go through an exclusive, randomly named
    temporary file: a symlink planted under the fixed name the writes once used
    ('.<name>.tmp') is neither followed nor reused."""
    from safepoint.workflows.scoring.sinks import _atomic_write

    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    out = tmp_path / "part-000000001.jsonl"
    (tmp_path / f".{out.name}.tmp").symlink_to(victim)
    _atomic_write(out, b'{"id": 1}\n')
    assert victim.read_text() == "keep"
    assert out.read_bytes() == b'{"id": 1}\n' and not out.is_symlink()
    # the new file has a new file's mode, and no other temporary file is left behind
    assert out.stat().st_mode & 0o777 == new_file_mode
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [victim.name, out.name, f".{out.name}.tmp"]
    )
