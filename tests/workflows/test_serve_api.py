"""`safepoint serve` as a client sees it: a real server process on loopback, real HTTP.

Missing values, booleans, model methods, GET /model, the OpenAPI document, the Host
check (DNS rebinding) and the request/reload log.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

import safepoint as sp

FEATURES = ["a", "b", "c"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _training() -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.random((300, 3)), columns=FEATURES)
    return X, (X.a + X.b > 1).astype(int)


def _start(store: sp.Store, log: Path, *extra: str) -> tuple[subprocess.Popen, dict[str, Any]]:
    port = _free_port()
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
            "--json",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=log.open("w"),  # a file: a pipe nobody reads would fill and block the log
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("SAFEPOINT_")},
    )
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:  # the startup JSON, then nothing more on stdout
        lines.append(line)
        if line.rstrip() == "}":
            break
    if not lines:
        raise AssertionError(log.read_text())
    info = json.loads("".join(lines))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(info["url"] + "/ready", timeout=1).status_code == 200:
                return proc, info
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("the server did not become ready")


@pytest.fixture(scope="module")
def server(tmp_path_factory: Any) -> Any:
    root = tmp_path_factory.mktemp("serve")
    store = sp.Store(root / "store")
    X, y = _training()
    model = make_pipeline(SimpleImputer(), LogisticRegression()).fit(X, y)
    store.put("demo/clf", model, alias="production")
    proc, info = _start(store, root / "serve.log")
    yield {
        "store": store,
        "model": model,
        "url": info["url"],
        "info": info,
        "X": X,
        "y": y,
        "proc": proc,
        "log": root / "serve.log",
        "root": root,
    }
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.slow
def test_startup_json_says_where_and_what(server: dict[str, Any]) -> None:
    info = server["info"]
    assert info["model"] == "demo/clf@production" and info["version"] == "1"
    assert info["methods"] == ["predict", "predict_proba", "predict_log_proba", "decision_function"]
    assert info["token_required"] is False
    assert {"127.0.0.1", "localhost"} <= set(info["allowed_hosts"])


def test_null_is_a_missing_value_as_in_batch_scoring(server: dict[str, Any]) -> None:
    r = httpx.post(server["url"] + "/predict", json={"a": None, "b": 0.9, "c": 0.2})
    assert r.status_code == 200, r.text
    expected = server["model"].predict(pd.DataFrame([{"a": np.nan, "b": 0.9, "c": 0.2}]))
    assert r.json()["prediction"] == int(expected[0])
    # absent is not null: a missing feature is still an error
    r = httpx.post(server["url"] + "/predict", json={"b": 0.9, "c": 0.2})
    assert r.status_code == 422 and "missing feature(s) ['a']" in r.json()["error"]


def test_a_boolean_for_a_numeric_feature_is_an_error(server: dict[str, Any]) -> None:
    r = httpx.post(server["url"] + "/predict", json={"a": True, "b": 0.9, "c": 0.2})
    assert r.status_code == 422
    assert r.json()["error"] == "a: a numeric feature takes a number, not true/false (got true)"
    ok = {"a": 0.1, "b": 0.9, "c": 0.2}
    r = httpx.post(server["url"] + "/predict", json=[ok, {**ok, "b": False}, {**ok, "c": "0.5"}])
    body = r.json()
    assert r.status_code == 200
    assert [e["index"] for e in body["errors"]] == [1]
    assert body["predictions"][0] is not None and body["predictions"][1] is None
    assert body["predictions"][2] is not None  # a number as text still parses, as in CSV


def test_model_methods_per_request(server: dict[str, Any]) -> None:
    rec = {"a": 0.1, "b": 0.9, "c": 0.2}
    frame = pd.DataFrame([rec])
    r = httpx.post(server["url"] + "/predict?method=predict_proba", json=[rec])
    body = r.json()
    assert r.status_code == 200 and body["method"] == "predict_proba"
    assert body["classes"] == [0, 1]
    np.testing.assert_allclose(body["predictions"][0], server["model"].predict_proba(frame)[0])
    r = httpx.post(
        server["url"] + "/predict", json={"records": [rec], "method": "decision_function"}
    )
    assert r.json()["predictions"][0] == pytest.approx(
        float(server["model"].decision_function(frame)[0])
    )
    for bad in ("fit", "__class__", "set_params"):
        r = httpx.post(server["url"] + f"/predict?method={bad}", json=rec)
        assert r.status_code == 422 and "method must be one of" in r.json()["error"]
        r = httpx.post(server["url"] + "/predict", json={"records": [rec], "method": bad})
        assert r.status_code == 400


def test_get_model(server: dict[str, Any]) -> None:
    body = httpx.get(server["url"] + "/model").json()
    assert body["name"] == "demo/clf" and body["model"] == "demo/clf@production"
    assert body["version"] == "1" and body["classes"] == [0, 1]
    assert body["signature"]["feature_names"] == FEATURES
    assert "predict_proba" in body["methods"] and body["default_method"] == "predict"


def test_openapi_describes_the_api_and_the_features(server: dict[str, Any]) -> None:
    doc = httpx.get(server["url"] + "/openapi.json").json()
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(doc)
    record = doc["components"]["schemas"]["Record"]
    assert record["required"] == FEATURES
    assert {"/predict", "/model", "/ready", "/health"} <= set(doc["paths"])
    methods = doc["paths"]["/predict"]["post"]["parameters"][0]["schema"]["enum"]
    assert methods == ["predict", "predict_proba", "predict_log_proba", "decision_function"]


def test_foreign_host_header_is_refused(server: dict[str, Any]) -> None:
    """DNS rebinding: a page on evil.example resolved to 127.0.0.1 sends Host: evil.example."""
    rec = {"a": 0.1, "b": 0.9, "c": 0.2}
    r = httpx.post(server["url"] + "/predict", json=rec, headers={"Host": "evil.example:8080"})
    assert r.status_code == 400 and "evil.example" in r.text
    assert httpx.get(server["url"] + "/model", headers={"Host": "evil.example"}).status_code == 400
    port = server["url"].rsplit(":", 1)[1]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
        assert httpx.post(server["url"] + "/predict", json=rec, headers={"Host": host}).is_success


@pytest.mark.slow
def test_allowed_host_reload_and_the_log(server: dict[str, Any]) -> None:
    """A server of its own: --allowed-host adds a name; the alias moves; the log says so."""
    X, y = server["X"], server["y"]
    store = sp.Store(server["root"] / "own-store")  # its alias moves: not the shared store's
    store.put("demo/clf", server["model"], alias="production")
    log = server["root"] / "own.log"
    proc, info = _start(store, log, "--allowed-host", "models.internal")
    try:
        rec = {"a": 0.1, "b": 0.9, "c": 0.2}
        url = info["url"]
        assert httpx.post(
            url + "/predict", json=rec, headers={"Host": "models.internal"}
        ).is_success
        r = httpx.post(url + "/predict", json=rec, headers={"Host": "other.internal"})
        assert r.status_code == 400
        assert httpx.post(url + "/predict", json={"a": True, "b": 1, "c": 1}).status_code == 422
        assert httpx.get(url + "/model").json()["version"] == "1"
        v2 = store.put("demo/clf", DummyClassifier(strategy="constant", constant=1).fit(X, y))
        store.set_alias("demo/clf", "production", v2.version, expected=1)
        deadline = time.monotonic() + 30
        while httpx.get(url + "/model").json()["version"] != "2":
            assert time.monotonic() < deadline, "the alias move was not picked up"
            time.sleep(0.1)
        r = httpx.post(url + "/predict", json={"a": 0.0, "b": 0.0, "c": 0.0})
        assert r.json()["version"] == "2" and r.json()["prediction"] == 1
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    text = log.read_text()
    assert "INFO safepoint.serve: serving demo/clf@production version 1" in text
    assert "POST /predict -> 200 in" in text and "POST /predict -> 422 in" in text
    assert "GET /model -> 200" in text
    assert "reloaded demo/clf@production: version 1 -> 2" in text


def test_score_method_matches_serve(tmp_path: Path) -> None:
    """The batch side of the same option: --method predict_proba, one column per class."""
    X, y = _training()
    model = LogisticRegression().fit(X, y)
    sp.dump(model, tmp_path / "m.sp")
    X.assign(id=np.arange(len(X))).to_parquet(tmp_path / "f.parquet")
    from safepoint.workflows.scoring import ScoringPipeline

    p = ScoringPipeline(str(tmp_path / "m.sp"), quiet=True)
    p.write(
        p.apply(p.read(tmp_path / "f.parquet"), method="predict_log_proba"),
        tmp_path / "out.parquet",
    )
    p.run()
    out = pd.read_parquet(tmp_path / "out.parquet")
    np.testing.assert_allclose(
        out[["log_proba_0", "log_proba_1"]].to_numpy(), model.predict_log_proba(X)
    )
    with pytest.raises(sp.SchemaError, match="has no predict_proba"):
        from sklearn.linear_model import LinearRegression

        ScoringPipeline(LinearRegression().fit(X, y)).apply(method="predict_proba")
    with pytest.raises(sp.SchemaError, match="method must be one of"):
        ScoringPipeline(model).apply(method="fit")
    assert math.isfinite(out.log_proba_0.sum())
