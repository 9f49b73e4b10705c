"""Scoring with models from the store: seed 000's quickstart, hot reload, runs table,
checkpointer sink, the CLI, HTTP serving under a hot reload, and Dask scale-out."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression

import safepoint as sp
from safepoint.workflows.scoring import ScoringPipeline
from safepoint.workflows.scoring.sinks import CheckpointerSink

PREDICTIONS_SCHEMA = """
  type Predictions @schema {
    id: Int! @key
    prediction: Float!
  }
"""
FEATURES = [f"FEATURE_{i}" for i in range(1, 6)]


def training_data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.random((n, len(FEATURES))), columns=FEATURES)
    y = (X.FEATURE_1 + X.FEATURE_2 > 1).astype(int)
    return X, y


def feature_file(path, n=300, seed=1):
    X, _ = training_data(n, seed)
    X.insert(0, "id", np.arange(n))
    X.to_parquet(path)
    return X


@pytest.fixture
def store(tmp_path):
    return sp.Store(tmp_path / "store")


def test_seed_000_quickstart(store, tmp_path):
    """Train, checkpoint the model, then a pipeline reads features, applies a
    per-record predict function and writes predictions with the seed's schema."""
    X_train, y_train = training_data()
    clf = LogisticRegression().fit(X_train, y_train)
    checkpointer = store.checkpointer(
        "USERNAME/PROJECT_NAME/predictive-model",
        description="Stores the model used to make predictions",
    )
    checkpointer.set("clf", clf)  # no pickle: the safepoint format

    feats = feature_file(tmp_path / "features.parquet")
    _clf = {}

    def get_clf():
        if "m" not in _clf:
            _clf["m"] = checkpointer.get("clf")
        return _clf["m"]

    def predict_outcome(record):
        clf = get_clf()
        X = pd.DataFrame([[record[f] for f in FEATURES]], columns=FEATURES)
        yield {"id": record["id"], "prediction": float(clf.predict_proba(X)[0][0])}

    p = ScoringPipeline(clf, store=store)
    features = p.read(tmp_path / "features.parquet")
    predictions = p.apply(features, predict_outcome)
    p.write(predictions, tmp_path / "predictions.parquet", schema=PREDICTIONS_SCHEMA)
    report = p.run()
    assert report.written == len(feats)
    out = pd.read_parquet(tmp_path / "predictions.parquet").sort_values("id")
    np.testing.assert_allclose(out["prediction"], clf.predict_proba(feats[FEATURES])[:, 0])


def test_model_by_alias_hot_reload_and_runs_table(store, tmp_path):
    X, y = training_data()
    store.put("demo/clf", LogisticRegression().fit(X, y), alias="production")
    feature_file(tmp_path / "f.parquet", n=200)
    moved = threading.Event()

    def slow(df, clf):
        time.sleep(0.05)
        if moved.is_set():
            pass
        return pd.DataFrame({"id": df["id"], "prediction": clf.predict(df[FEATURES])})

    p = ScoringPipeline("demo/clf@production", store=store, batch_size=20)
    p.write(
        p.apply(p.read(tmp_path / "f.parquet"), slow, batch=True),
        tmp_path / "out",
        schema="id: Int! @key, prediction: Float!, model_version: String!",
    )

    def move():
        time.sleep(0.3)
        v2 = store.put("demo/clf", DummyClassifier(strategy="constant", constant=1).fit(X, y))
        store.set_alias("demo/clf", "production", v2.version, expected=1)
        moved.set()

    t = threading.Thread(target=move)
    t.start()
    report = p.run()
    t.join()
    assert report.versions == ["1", "2"]
    out = pd.concat(pd.read_parquet(f) for f in sorted((tmp_path / "out").glob("part-*")))
    assert set(out["model_version"]) == {"1", "2"}
    # the new version made every prediction after the switch
    late = out[out["model_version"] == "2"]
    assert (late["prediction"] == 1).all()
    run = store.runs.list(kind="scoring")[0]
    assert run.status == "succeeded" and run.progress == 1.0
    assert run.state["counts"]["written"] == 200 and run.state["versions"] == ["1", "2"]


def test_checkpointer_sink_is_exactly_once(store, tmp_path):
    X, y = training_data()
    store.put("demo/clf", LogisticRegression().fit(X, y), alias="production")
    feature_file(tmp_path / "f.parquet", n=150)
    ckpt = store.checkpointer("demo/predictions")
    for _ in range(2):
        p = ScoringPipeline("demo/clf@production", store=store, batch_size=40)
        p.write(p.apply(p.read(tmp_path / "f.parquet")), ckpt, schema=PREDICTIONS_SCHEMA)
        p.run()
    got = CheckpointerSink(ckpt).predictions()
    assert sorted(got["id"]) == list(range(150))


def test_signature_from_store_rejects_wrong_input(store, tmp_path):
    X, y = training_data()
    store.put("demo/clf", LogisticRegression().fit(X, y), alias="production")
    bad = pd.DataFrame({"id": [1], "OTHER": [0.5]})
    bad.to_parquet(tmp_path / "bad.parquet")
    p = ScoringPipeline("demo/clf@production", store=store)
    p.write(p.apply(p.read(tmp_path / "bad.parquet")), tmp_path / "o", schema=PREDICTIONS_SCHEMA)
    with pytest.raises(sp.SchemaError, match="FEATURE_1"):
        p.run()
    with pytest.raises(sp.NotFoundError):
        ScoringPipeline("demo/nope@production", store=store)


def _cli(*args, env=None, input=None):
    return subprocess.run(
        [sys.executable, "-m", "safepoint.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        input=input,
    )


@pytest.mark.slow
def test_cli_score_file_and_stdin(store, tmp_path):
    X, y = training_data()
    store.put("demo/clf", LogisticRegression().fit(X, y), alias="production")
    feature_file(tmp_path / "f.parquet", n=50)
    r = _cli(
        "score",
        "--model",
        "demo/clf@production",
        "--store",
        str(store.url),
        "--input",
        str(tmp_path / "f.parquet"),
        "--output",
        str(tmp_path / "p.jsonl"),
        "--schema",
        PREDICTIONS_SCHEMA,
        "--json",
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["written"] == 50 and summary["exactly_once"] is True
    lines = "\n".join(json.dumps({"id": i, **{f: 0.5 for f in FEATURES}}) for i in range(3))
    r = _cli(
        "score",
        "-m",
        "demo/clf@production",
        "--store",
        str(store.url),
        "-i",
        "-",
        "-o",
        "-",
        "--schema",
        "id: Int! @key, prediction: Float!",
        input=lines + "\n",
    )
    assert r.returncode == 0, r.stderr
    assert [json.loads(x)["id"] for x in r.stdout.splitlines()] == [0, 1, 2]
    r = _cli("score", "-m", "demo/missing", "--store", str(store.url), "-i", "-", "-o", "-")
    assert r.returncode == 1 and "error" in r.stderr


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read())
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("server did not become ready")


@pytest.mark.slow
def test_serve_answers_validates_and_reloads_without_dropping_requests(store, tmp_path):
    X, y = training_data()
    store.put("demo/clf", LogisticRegression().fit(X, y), alias="production")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "safepoint.cli",
            "serve",
            "--model",
            "demo/clf@production",
            "--store",
            str(store.url),
            "--port",
            str(port),
            "--reload-interval",
            "0.2",
            "--token",
            "env:SP_TOKEN",
            "-q",  # no request log: nobody reads the stderr pipe while it serves
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SP_TOKEN": "s3cret-token"},
    )
    try:
        _wait_ready(url, proc)
        auth = {"Authorization": "Bearer s3cret-token"}
        rec = {f: 0.9 for f in FEATURES}
        assert httpx.post(url + "/predict", json=rec).status_code == 401
        r = httpx.post(url + "/predict", json=rec, headers=auth)
        assert r.status_code == 200 and r.json()["version"] == "1"
        r = httpx.post(url + "/predict", headers=auth, json={"records": [rec, {"FEATURE_1": 1}]})
        assert r.status_code == 200 and "FEATURE_2" in r.json()["errors"][0]["error"]
        assert r.json()["predictions"][0] is not None and r.json()["predictions"][1] is None
        r = httpx.post(url + "/predict", headers=auth, json={"FEATURE_1": 1})
        assert r.status_code == 422 and "FEATURE_2" in r.json()["error"]
        r = httpx.post(url + "/predict", headers=auth, content=b"{not json")
        assert r.status_code == 400
        r = httpx.post(
            url + "/predict", headers=auth, json={"records": [rec, {**rec, "FEATURE_3": "abc"}]}
        )
        body = r.json()
        assert r.status_code == 200 and body["predictions"][1] is None
        assert body["errors"][0]["index"] == 1
        # a bounded load while the alias moves: every request answered
        statuses, versions = [], set()
        stop = time.monotonic() + 4
        with httpx.Client(headers=auth) as client:
            moved = False
            while time.monotonic() < stop and len(statuses) < 2000:
                resp = client.post(url + "/predict", json={"records": [rec] * 10})
                statuses.append(resp.status_code)
                versions.add(resp.json().get("version"))
                if not moved and len(statuses) > 20:
                    v2 = store.put(
                        "demo/clf", DummyClassifier(strategy="constant", constant=1).fit(X, y)
                    )
                    store.set_alias("demo/clf", "production", v2.version, expected=1)
                    moved = True
        assert set(statuses) == {200}, statuses
        assert versions == {"1", "2"}
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.slow
def test_serve_refuses_public_bind_without_token(store):
    r = _cli("serve", "--model", "demo/clf", "--store", str(store.url), "--host", "0.0.0.0")
    assert r.returncode == 1 and "token" in r.stderr


@pytest.mark.slow
def test_dask_scale_out_ships_model_once_per_worker(store, tmp_path):
    distributed = pytest.importorskip("distributed")
    from safepoint.workflows.scoring.distributed import score_on_dask

    X, y = training_data()
    clf = LogisticRegression().fit(X, y)
    store.put("demo/clf", clf, alias="production")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    frames = []
    for i in range(4):
        df = feature_file(inbox / f"part{i}.parquet", n=100, seed=i)
        df["id"] += 1000 * i
        df.to_parquet(inbox / f"part{i}.parquet")
        frames.append(df)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        report = score_on_dask(
            client,
            "demo/clf@production",
            str(store.url),
            inbox,
            tmp_path / "out",
            schema=PREDICTIONS_SCHEMA,
            batch_size=30,
        )
        again = score_on_dask(
            client,
            "demo/clf@production",
            str(store.url),
            inbox,
            tmp_path / "out",
            schema=PREDICTIONS_SCHEMA,
            batch_size=30,
        )
    assert report.written == 400 and again.written == 0  # the rerun had nothing left to do
    assert 1 <= report.model_loads <= 2
    out = pd.concat(pd.read_parquet(p) for p in sorted((tmp_path / "out").rglob("part-*")))
    allf = pd.concat(frames)
    assert sorted(out["id"]) == sorted(allf["id"])
    merged = out.merge(allf, on="id")
    np.testing.assert_array_equal(merged["prediction"], clf.predict(merged[FEATURES]))
