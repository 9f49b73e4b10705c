"""Scoring from a notebook: async per-record functions inside a running event loop,
``await arun()``, and models that come from a function, a checkpointer key, or the
user's own function (no model given to the pipeline)."""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import safepoint as sp
from safepoint.workflows.scoring import ScoringPipeline, from_checkpointer

PREDICTIONS_SCHEMA = """
  type Predictions @schema {
    id: Int! @key
    prediction: Float!
  }
"""
FEATURES = [f"FEATURE_{i}" for i in range(1, 6)]


def training_data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.random((n, len(FEATURES))), columns=FEATURES)
    y = (X.FEATURE_1 + X.FEATURE_2 > 1).astype(int)
    return X, y


@pytest.fixture
def store(tmp_path):
    return sp.Store(tmp_path / "store")


@pytest.fixture
def clf():
    X, y = training_data()
    return LogisticRegression().fit(X, y)


@pytest.fixture
def features(tmp_path):
    X, _ = training_data(120, seed=1)
    X.insert(0, "id", np.arange(len(X)))
    X.to_parquet(tmp_path / "features.parquet")
    return X


def _expected(clf, feats):
    return clf.predict_proba(feats[FEATURES])[:, 0]


def _read(path):
    return pd.read_parquet(path).sort_values("id").reset_index(drop=True)


def test_seed_style_async_pipeline_runs_inside_a_running_loop(store, clf, features, tmp_path):
    """The notebook case: ``p.run()`` called while an event loop runs (as in a Jupyter
    cell), with the seed's async model fetcher and async generator; no model is given to
    the pipeline. The model is fetched once, not once per record in flight."""
    checkpointer = store.checkpointer("USERNAME/PROJECT_NAME/predictive-model")
    checkpointer.set("clf_serialized", clf)
    loads = []
    _clf = None

    async def get_clf():
        nonlocal _clf
        if _clf is None:
            loads.append(1)
            _clf = await checkpointer.aget("clf_serialized")
        return _clf

    async def predict_outcome(record):
        clf = await get_clf()
        X = pd.DataFrame([[record[f] for f in FEATURES]], columns=FEATURES)
        yield {"id": record["id"], "prediction": float(clf.predict_proba(X)[0][0])}

    async def notebook_cell():
        asyncio.get_running_loop()  # a loop is running, as in Jupyter
        p = ScoringPipeline(store=store, batch_size=50)
        predictions = p.apply(p.read(tmp_path / "features.parquet"), predict_outcome)
        p.write(predictions, tmp_path / "predictions.parquet", schema=PREDICTIONS_SCHEMA)
        return p.run()

    report = asyncio.run(notebook_cell())
    assert (report.read, report.written, report.bad) == (120, 120, 0)
    assert loads == [1]
    out = _read(tmp_path / "predictions.parquet")
    np.testing.assert_allclose(out["prediction"], _expected(clf, features))
    run = store.runs.list(kind="scoring")[0]
    assert run.status == "succeeded" and run.state["counts"]["written"] == 120


def test_one_event_loop_for_the_whole_run(clf, features, tmp_path):
    """A client an async function opens on the first record is still usable at the last
    batch: every record of a run is awaited on the same loop (not a new loop per batch)."""
    loops = set()
    lock = None

    async def fn(record, model):
        nonlocal lock
        loops.add(id(asyncio.get_running_loop()))
        if lock is None:
            lock = asyncio.Lock()  # bound to the loop that first uses it
        async with lock:
            await asyncio.sleep(0)
        return {"id": record["id"], "prediction": 1.0}

    p = ScoringPipeline(clf, batch_size=16)
    p.write(p.apply(p.read(tmp_path / "features.parquet"), fn), tmp_path / "o", schema="id: int!")
    assert p.run().written == 120
    assert len(loops) == 1


def test_arun_uses_the_callers_loop_and_does_not_block_it(clf, features, tmp_path):
    async def main():
        loop = asyncio.get_running_loop()
        seen_loops = set()
        lock = asyncio.Lock()  # made and used on the caller's loop
        async with lock:
            pass
        ticks = 0
        running = True

        async def ticker():
            nonlocal ticks
            while running:
                ticks += 1
                await asyncio.sleep(0.001)

        async def fn(record, model):
            seen_loops.add(asyncio.get_running_loop())
            async with lock:  # fails on any other loop
                await asyncio.sleep(0)
            X = pd.DataFrame([[record[f] for f in FEATURES]], columns=FEATURES)
            return {"id": record["id"], "prediction": float(model.predict_proba(X)[0][0])}

        t = asyncio.create_task(ticker())
        p = ScoringPipeline(clf, batch_size=40)
        p.write(
            p.apply(p.read(tmp_path / "features.parquet"), fn),
            tmp_path / "out.parquet",
            schema=PREDICTIONS_SCHEMA,
        )
        report = await p.arun()
        running = False
        await t
        return report, seen_loops == {loop}, ticks

    report, same_loop, ticks = asyncio.run(main())
    assert report.written == 120 and same_loop
    assert ticks > 0  # the loop ran other tasks while the pipeline worked
    out = _read(tmp_path / "out.parquet")
    np.testing.assert_allclose(out["prediction"], _expected(clf, features))


def test_cancelled_arun_resumes_exactly_once(store, clf, features, tmp_path):
    out = tmp_path / "out"
    block = {"on": True}

    async def main():
        reached = asyncio.Event()

        async def fn(record, model):
            if block["on"] and record["id"] == 15:  # in the second batch
                reached.set()
                await asyncio.Event().wait()  # never returns: cancelled with the run
            return {"id": record["id"], "prediction": float(record["id"])}

        p = ScoringPipeline(clf, store=store, batch_size=10)
        p.write(p.apply(p.read(tmp_path / "features.parquet"), fn), out, schema=PREDICTIONS_SCHEMA)
        task = asyncio.create_task(p.arun())
        await reached.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        block["on"] = False
        return await p.arun()

    report = asyncio.run(main())
    assert report.resumed_from == {"features.parquet": 10}
    assert report.read == 110
    got = pd.concat(pd.read_parquet(f) for f in sorted(out.glob("part-*.parquet")))
    assert sorted(got["id"]) == list(range(120))
    statuses = [r.status for r in store.runs.list(kind="scoring")]
    assert statuses == ["succeeded", "interrupted"]


def test_model_from_an_async_function(clf, features, tmp_path):
    calls = []

    async def get_clf():
        calls.append(1)
        await asyncio.sleep(0)
        return clf

    p = ScoringPipeline(get_clf, batch_size=50)
    p.write(
        p.apply(p.read(tmp_path / "features.parquet")),  # the default: the model's predict
        tmp_path / "out.parquet",
        schema="id: Int! @key, prediction: Float!",
    )
    report = p.run()
    assert report.written == 120 and calls == [1]
    out = _read(tmp_path / "out.parquet")
    np.testing.assert_array_equal(out["prediction"], clf.predict(features[FEATURES]))


def test_model_from_a_plain_function_given_to_a_per_record_function(clf, features, tmp_path):
    def predict_outcome(record, model):
        X = pd.DataFrame([[record[f] for f in FEATURES]], columns=FEATURES)
        yield {"id": record["id"], "prediction": float(model.predict_proba(X)[0][0])}

    p = ScoringPipeline(lambda: clf)
    p.write(
        p.apply(p.read(tmp_path / "features.parquet"), predict_outcome),
        tmp_path / "out.parquet",
        schema=PREDICTIONS_SCHEMA,
    )
    assert p.run().written == 120
    np.testing.assert_allclose(
        _read(tmp_path / "out.parquet")["prediction"], _expected(clf, features)
    )


def test_model_from_a_checkpointer_key_follows_new_sets(store, clf, features, tmp_path):
    from sklearn.dummy import DummyClassifier

    X, y = training_data()
    ckpt = store.checkpointer("USERNAME/PROJECT_NAME/predictive-model")
    ckpt.set("clf", clf)
    moved = []

    def fn(df, model):
        if not moved and df["id"].iloc[0] >= 60:  # half way: a new model is set
            ckpt.set("clf", DummyClassifier(strategy="constant", constant=1).fit(X, y))
            moved.append(1)
        return pd.DataFrame({"id": df["id"], "prediction": model.predict(df[FEATURES])})

    p = ScoringPipeline(from_checkpointer(ckpt, "clf"), batch_size=20)
    p.write(
        p.apply(p.read(tmp_path / "features.parquet"), fn, batch=True),
        tmp_path / "out.parquet",
        schema="id: Int! @key, prediction: Float!, model_version: String!",
    )
    report = p.run()
    assert report.written == 120 and len(report.versions) == 2
    out = _read(tmp_path / "out.parquet")
    assert out["model_version"].tolist() == [report.versions[0]] * 80 + [report.versions[1]] * 40
    np.testing.assert_array_equal(out["prediction"][:80], clf.predict(features[FEATURES])[:80])
    assert (out["prediction"][80:] == 1).all()
    # recorded in the checkpointer's store
    run = store.runs.list(kind="scoring")[0]
    assert run.state["model"] == "USERNAME/PROJECT_NAME/predictive-model[clf]"


def test_checkpointer_model_errors_are_clear(store, clf):
    import pickle

    ckpt = store.checkpointer("p/m")
    ckpt.set("pickled", pickle.dumps(clf))
    with pytest.raises(sp.SchemaError, match="not a safepoint file"):
        ScoringPipeline(from_checkpointer(ckpt, "pickled"))
    with pytest.raises(sp.NotFoundError):
        ScoringPipeline(from_checkpointer(ckpt, "missing"))
    with pytest.raises(sp.SchemaError, match="store checkpointer"):
        from_checkpointer({"clf": clf}, "clf")
    ckpt.set("as-file", sp.dumps(clf))  # the bytes of a safepoint file are a model
    assert ScoringPipeline(from_checkpointer(ckpt, "as-file")).model.coef_.tolist() == (
        clf.coef_.tolist()
    )


def test_no_model_needs_a_function_that_fetches_it(tmp_path, features):
    p = ScoringPipeline()
    stream = p.read(tmp_path / "features.parquet")
    with pytest.raises(sp.SchemaError, match="no model"):
        p.apply(stream)
    with pytest.raises(sp.SchemaError, match="takes a model argument"):
        p.apply(stream, lambda record, model: {"id": record["id"]})
    with pytest.raises(sp.SchemaError, match="not a fitted model"):
        ScoringPipeline(LogisticRegression)
    with pytest.raises(sp.SchemaError, match="concurrency"):
        p.apply(stream, lambda r: r, concurrency=0)
    with pytest.raises(sp.SchemaError, match="returned None"):
        q = ScoringPipeline(lambda: None)
        q.write(q.apply(q.read(tmp_path / "features.parquet")), tmp_path / "o", schema="id: int")
        q.run()
