"""The web console in a real browser: headless Chromium (Debian's package) driven by
Playwright, against `safepoint ui` started as a subprocess.

Set SAFEPOINT_SCREENSHOTS=docs/screenshots to refresh the screenshots in docs/.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier

import safepoint as sp

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed (.ci/run installs it)"
)
TOKEN = "console-test-token"
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
COLS = [f"f{i}" for i in range(5)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def populated(tmp_path_factory):
    root = tmp_path_factory.mktemp("console")
    store = sp.Store(root / "store")
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.random((300, 5)), columns=COLS)
    y = (X.f0 + X.f1 > 1).astype(int)
    v1 = store.put(
        "fraud/clf",
        LogisticRegression().fit(X, y),
        alias="production",
        metrics={"auc": 0.91},
        metadata={"owner": "ds-team"},
    )
    store.put(
        "fraud/clf", LogisticRegression(C=0.1).fit(X, y), metrics={"auc": 0.93}, parents=[v1.ref]
    )
    store.put("fraud/clf", KNeighborsClassifier().fit(X, y), metrics={"auc": 0.89})
    assert store.verify("fraud/clf@2").ok  # recorded: the console shows it without loading
    for i in range(3):
        store.put(f"other/model-{i}", GaussianNB().fit(X, y))
    # the output of a step workflow: hidden from the model list unless asked for
    store.put("training/step_2", {"rows": 300}, tags={"safepoint.step": "training:2"})
    store.checkpointer("fraud/state", description="scoring job state").set("threshold", 0.7)
    search = sp.ResumableGridSearchCV(
        LogisticRegression(),
        {"C": [0.01, 0.1, 1.0, 10.0]},
        cv=3,
        checkpoint=store.checkpointer("fraud/search"),
    )
    search.fit(X, y)
    X.assign(id=np.arange(len(X)))[["id", *COLS]].to_parquet(
        root / "features.parquet", row_group_size=20
    )
    return root, store, X, y


@pytest.fixture(scope="module")
def console(populated):
    _, store, _, _ = populated
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "safepoint.cli",
            "ui",
            "--store",
            store.url,
            "--port",
            str(port),
            "--allow-writes",
            "--token",
            "env:SP_UI_TOKEN",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SP_UI_TOKEN": TOKEN},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read())
        try:
            if httpx.get(url + "/", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def _shot(page, name: str) -> None:
    folder = os.environ.get("SAFEPOINT_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


@pytest.mark.slow
def test_browse_list_model_version_audit(console, browser):
    page = browser.new_page()
    page.goto(console + "/")
    assert page.locator("#models tbody tr").count() == 4
    _shot(page, "models")
    page.fill("input[name=q]", "fraud")
    page.click("form.search button")
    assert page.locator("#models tbody tr").count() == 1
    page.click("a.model-link")
    page.wait_for_selector("#versions")
    assert page.locator("#versions tbody tr").count() == 3
    assert page.locator("#metrics-plot .main-svg").count() >= 1  # plotly drew the chart
    _shot(page, "model")
    page.click("a.version-link >> text='2'")
    page.wait_for_selector("#audit")
    audit = page.inner_text("#audit")
    assert "sklearn.linear_model._logistic.LogisticRegression" in audit
    assert "default trust set" in audit
    assert "fraud/clf@1" in page.inner_text("#lineage")
    assert "OK at" in page.inner_text("#verify")
    assert "C" in page.inner_text("#metadata")
    _shot(page, "version")
    page.goto(console + "/compare/fraud/clf?a=1&b=2")
    assert "param C" in page.inner_text("#compare")
    page.goto(console + "/audit")
    assert "put" in page.inner_text("#audit-log")
    page.goto(console + "/checkpointers?name=fraud/state")
    assert "threshold" in page.inner_text("#keys")
    page.close()


@pytest.mark.slow
def test_step_outputs_are_listed_only_when_asked(console, browser):
    page = browser.new_page()
    page.goto(console + "/")
    names = page.locator("a.model-link").all_inner_texts()
    assert "training/step_2" not in names and len(names) == 4
    assert set(page.locator("#models td.kind").all_inner_texts()) == {"model"}
    page.check("input[name=all]")
    page.click("form.search button")
    rows = page.locator("#models tbody tr")
    assert rows.count() == 5
    step_row = rows.filter(has_text="training/step_2")
    assert step_row.locator("td.kind").inner_text() == "step"
    page.close()


@pytest.mark.slow
def test_search_results_plot(console, browser, populated):
    _, store, _, _ = populated
    run = store.runs.list(kind="search")[0]
    page = browser.new_page()
    page.goto(console + f"/runs/{run.id}")
    page.wait_for_selector("#search-plot .main-svg")
    assert "4 candidates, 12 fits" in page.inner_text("#search")
    _shot(page, "search")
    page.close()


SCORER = textwrap.dedent(
    """
    import sys, time
    import pandas as pd
    from safepoint.workflows.scoring import ScoringPipeline
    store, src, out = sys.argv[1:4]

    def slow(df, clf):
        time.sleep(1.0)
        cols = [c for c in df.columns if c != "id"]
        return pd.DataFrame({"id": df["id"], "prediction": clf.predict(df[cols])})

    p = ScoringPipeline("fraud/clf@production", store=store, batch_size=10, quiet=True,
                        name="console-test")
    p.write(p.apply(p.read(src), slow, batch=True), out,
            schema="id: Int! @key, prediction: Float!, model_version: String")
    p.run()
    """
)


@pytest.mark.slow
def test_watch_predictions_appear_while_scoring(console, browser, populated, tmp_path):
    root, store, _, _ = populated
    script = tmp_path / "scorer.py"
    script.write_text(SCORER)
    proc = subprocess.Popen(
        [
            sys.executable,
            str(script),
            store.url,
            str(root / "features.parquet"),
            str(tmp_path / "out"),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        run = None
        while time.monotonic() < deadline and run is None:
            runs = [r for r in store.runs.list(kind="scoring") if r.name == "console-test"]
            run = runs[0] if runs else None
            time.sleep(0.2)
        assert run is not None, "the scoring job never registered its run"
        page = browser.new_page()
        page.goto(console + f"/runs/{run.id}")
        page.wait_for_selector("#latest tr.prediction", timeout=60_000)
        first = page.inner_text("#latest")
        # the next batch's predictions replace these, while the job runs
        page.wait_for_function(
            "prev => document.querySelector('#latest').innerText !== prev",
            arg=first,
            timeout=60_000,
        )
        assert "model_version" in page.inner_text("#latest")
        _shot(page, "scoring")
        page.close()
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_move_alias_and_cas_refuses_a_stale_move(console, browser, populated):
    _, store, X, y = populated
    page = browser.new_page()
    page.on("dialog", lambda d: d.accept())
    page.goto(console + "/version/2/fraud/clf")
    page.fill("input[name=token]", TOKEN)
    page.fill("input[name=expected]", "1")
    page.click("#move-alias")
    page.wait_for_selector("#message")
    assert "Moved production to version 2" in page.inner_text("#message")
    assert store.aliases("fraud/clf")["production"] == 2
    # a second page still believes production is at 2; someone moves it meanwhile
    stale = browser.new_page()
    stale.on("dialog", lambda d: d.accept())
    stale.goto(console + "/version/3/fraud/clf")
    stale.fill("input[name=token]", TOKEN)
    stale.fill("input[name=expected]", "2")
    v4 = store.put("fraud/clf", DummyClassifier().fit(X, y))
    store.set_alias("fraud/clf", "production", v4.version, expected=2)
    stale.click("#move-alias")
    stale.wait_for_selector("#message")
    assert "Refused" in stale.inner_text("#message")
    assert store.aliases("fraud/clf")["production"] == v4.version
    # a wrong token changes nothing
    stale.goto(console + "/version/3/fraud/clf")
    stale.fill("input[name=token]", "wrong")
    stale.fill("input[name=expected]", str(v4.version))
    stale.click("#move-alias")
    assert "wrong token" in stale.inner_text("body")
    assert store.aliases("fraud/clf")["production"] == v4.version
    page.close()
    stale.close()


def test_writes_need_csrf_and_same_origin(console):
    r = httpx.post(
        console + "/alias/fraud/clf", data={"alias": "production", "version": "1", "token": TOKEN}
    )
    assert r.status_code == 403
    r = httpx.post(
        console + "/alias/fraud/clf",
        headers={"origin": "http://evil.example"},
        cookies={"sp_csrf": "x"},
        data={"csrf": "x", "version": "1", "token": TOKEN, "alias": "production"},
    )
    assert r.status_code == 403


@pytest.mark.slow
def test_no_path_traversal_and_public_bind_needs_token(console, populated):
    assert httpx.get(console + "/model/..%2F..%2Fetc%2Fpasswd").status_code in (400, 404)
    assert httpx.get(console + "/model/fraud/../../etc").status_code in (400, 404)
    _, store, _, _ = populated
    r = subprocess.run(
        [sys.executable, "-m", "safepoint.cli", "ui", "--store", store.url, "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and "token" in r.stderr
