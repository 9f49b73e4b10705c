"""The console against a store full of hostile text, in a real browser (Debian's Chromium
driven by Playwright, `safepoint ui` as a subprocess), and the pages users navigate.

Every place a page shows something a user or a file chose (metric names, tags,
metadata, parameters, run names and messages, checkpointer keys and descriptions,
the keys of a scoring run's latest rows, the user name) holds markup that would run
a script if it were put into the page as HTML. The tests assert that none ran, that
no element was injected, that the text is shown literally, and that the page needed
no inline script (the Content-Security-Policy reports none).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from test_console_browser import CHROMIUM, FLAGS, _free_port

import safepoint as sp

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed (.ci/run installs it)"
)

# markup that runs a script if a page treats it as HTML, in each context a page uses
XSS = [
    "</script><script>window.__xss='script'</script>",
    "<img src=x onerror=\"window.__xss='img'\">",
    '"><svg onload="window.__xss=\'svg\'">',
    "<a href=\"javascript:window.__xss='href'\">link</a>",
]
H = XSS[0] + XSS[1]  # most fields take the two that break out of a script or an attribute

# recorded before any page script: CSP violations and dialogs (alert) mean something ran
# or tried to
INIT = """
window.__violations = [];
document.addEventListener("securitypolicyviolation",
    e => window.__violations.push(e.violatedDirective + " " + e.blockedURI));
window.alert = window.confirm = window.prompt = () => { window.__xss = "dialog"; };
"""
INJECTED = (
    'document.querySelectorAll(\'img[src="x"], svg[onload], a[href^="javascript"], '
    'script:not([src]):not([type="application/json"])\').length'
)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: Any) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("hostile")
    old_user = os.environ.get("SAFEPOINT_USER")
    os.environ["SAFEPOINT_USER"] = XSS[1]  # the audit log and "created by" show it
    try:
        store = sp.Store(root / "store")
        rng = np.random.default_rng(0)
        X = pd.DataFrame(rng.random((120, 3)), columns=["a", "b", "c"])
        labels = np.array([XSS[1], XSS[2]])[(X.a > 0.5).astype(int)]
        dummy = DummyClassifier(strategy="constant", constant=XSS[1]).fit(X, labels)
        for i in range(3):
            store.put(
                "x/model",
                dummy,
                metrics={XSS[0]: 0.5 + i / 10, XSS[1]: 0.1 + 0.2, "auc": 0.86 + i * 1e-16},
                tags={XSS[1]: XSS[0], "candidate": ""},
                metadata={XSS[3]: XSS[0], "k": H},
                parents=["x/model@1"] if i == 2 else [],
            )
        store.checkpointer("x/state", description=H).set(XSS[1], 1.0)
        search = sp.ResumableGridSearchCV(
            DummyClassifier(strategy="constant"),
            {"constant": [XSS[1], XSS[2]]},
            cv=2,
            checkpoint=store.checkpointer("x/search"),
        )
        search.fit(X, labels)
        run = store.runs.start("scoring", H)
        run.update(
            state={
                "latest": [{XSS[0]: XSS[1], XSS[1]: 1.5, "model_version": XSS[3]}],
                "offsets": {XSS[1]: 3},
                "counts": {"bad": XSS[1]},
            }
        )
        run.finish("failed", H)
    finally:
        if old_user is None:
            os.environ.pop("SAFEPOINT_USER", None)
        else:
            os.environ["SAFEPOINT_USER"] = old_user
    return {"root": root, "store": store, "scoring_run": run.id}


@pytest.fixture(scope="module")
def console(hostile: dict[str, Any]) -> Any:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "safepoint.cli",
            "ui",
            "--store",
            hostile["store"].url,
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read() if proc.stderr else "exited")
        try:
            if httpx.get(url + "/", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser() -> Any:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def _visit(browser: Any, url: str, wait: str | None = None) -> Any:
    page = browser.new_page()
    page.add_init_script(INIT)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    response = page.goto(url)
    assert response is not None and response.status == 200, url
    csp = response.headers.get("content-security-policy", "")
    assert (
        "script-src 'self'" in csp
        and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    )
    if wait:
        page.wait_for_selector(wait, timeout=30_000)
    page.wait_for_load_state("networkidle")
    assert page.evaluate("window.__xss") is None, url
    assert page.evaluate(INJECTED) == 0, url
    assert page.evaluate("window.__violations") == [], url
    assert errors == [], errors
    return page


def _run_id(store: sp.Store, kind: str) -> str:
    return store.runs.list(kind=kind)[0].id


@pytest.mark.slow
def test_no_script_runs_on_any_page(console: str, browser: Any, hostile: dict[str, Any]) -> None:
    store = hostile["store"]
    pages = {
        "/": "#models",
        "/?tag=candidate": "#models",
        "/model/x/model": "#metrics-plot .main-svg",
        "/version/3/x/model": "#lineage",
        "/version/1/x/model": "#lineage",
        "/compare/x/model?v=1&v=2&v=3": "#compare",
        "/audit": "#audit-log",
        "/runs": "#runs",
        f"/runs/{_run_id(store, 'search')}": "#search-plot .main-svg",
        f"/runs/{hostile['scoring_run']}": "#latest tr.prediction",
        "/checkpointers": "#namespaces",
        "/checkpointers?name=x/state": "#keys",
    }
    for path, ready in pages.items():
        page = _visit(browser, console + path, ready)
        page.close()


@pytest.mark.slow
def test_hostile_text_is_shown_literally(
    console: str, browser: Any, hostile: dict[str, Any]
) -> None:
    page = _visit(browser, console + "/model/x/model", "#metrics-plot .main-svg")
    assert XSS[0] in page.inner_text("#versions")  # a metric name
    legend = page.eval_on_selector("#metrics-plot .legend", "e => e.textContent")  # literal
    assert "</script><script>" in legend and "<img src=x" in legend
    page.close()
    page = _visit(browser, console + "/version/2/x/model", "#metadata")
    meta = page.inner_text("#metadata")
    assert XSS[0] in meta and XSS[1] in meta  # metric, tag
    assert "constant" in meta and "<img src=x" in meta  # a parameter from the manifest
    assert XSS[1] in page.inner_text("body")  # created by
    page.close()
    page = _visit(browser, console + f"/runs/{hostile['scoring_run']}", "#latest tr.prediction")
    header = page.inner_text("#latest thead")
    assert XSS[0] in header and XSS[1] in header  # the keys of the latest rows
    assert XSS[3] in page.inner_text("#latest tbody")
    assert H in page.inner_text("h1")  # the run's name
    page.close()
    page = _visit(
        browser, console + f"/runs/{_run_id(hostile['store'], 'search')}", "#search-plot .main-svg"
    )
    table = page.inner_text("#candidates")
    assert "constant='<img src=x" in table and "constant='\"><svg" in table  # parameters
    page.close()
    page = _visit(browser, console + "/checkpointers?name=x/state", "#keys")
    assert XSS[1] in page.inner_text("#keys") and H in page.inner_text("#namespaces")
    page.close()


def test_a_foreign_host_header_is_refused(console: str) -> None:
    """DNS rebinding: evil.example resolved to 127.0.0.1 still says Host: evil.example."""
    port = console.rsplit(":", 1)[1]
    r = httpx.get(console + "/", headers={"Host": f"evil.example:{port}"})
    assert r.status_code == 400 and "--allowed-host" in r.text
    assert httpx.get(console + "/", headers={"Host": f"localhost:{port}"}).status_code == 200


# -- navigation and the pages' fixes ------------------------------------------------------
@pytest.fixture(scope="module")
def workbench(tmp_path_factory: Any) -> dict[str, Any]:
    """A store as a team has it: a search and its refit model, versions with children,
    a step workflow, metrics and tags."""
    root = tmp_path_factory.mktemp("bench")
    store = sp.Store(root / "store")
    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.random((300, 4)), columns=["a", "b", "c", "d"])
    y = (X.a + X.b > 1).astype(int)
    search = sp.ResumableGridSearchCV(
        LogisticRegression(),
        {"C": [0.01, 0.1, 1.0, 10.0]},
        cv=3,
        checkpoint=store.checkpointer("team/search"),
    )
    search.fit(X, y)
    best = store.put(
        "team/clf",
        search.best_estimator_,
        run_id=search.run_id_,
        metrics={"auc": 0.1 + 0.2, "loss": 0.8600000000000001},
        tags={"candidate": "yes"},
    )
    for i in range(3):
        store.put(
            "team/clf",
            LogisticRegression(C=i + 1.0).fit(X, y),
            parents=[best.ref],
            metrics={"auc": 0.5 + i / 10},
        )
    store.put("team/other", LogisticRegression().fit(X, y), metrics={"auc": 0.95})
    store.put("team/untagged", LogisticRegression().fit(X, y))
    store.checkpointer("team/state").set("offset", 3)

    class Training(sp.Steps):
        def step_1(self, outputs: Any) -> Any:
            return np.arange(10)

        def step_2(self, outputs: Any) -> Any:
            return outputs["step_1"] * 2

    Training(name="team/training", store=store).run()
    return {"store": store, "search_run": search.run_id_, "best": best}


@pytest.fixture(scope="module")
def team_console(workbench: dict[str, Any]) -> Any:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "safepoint.cli",
            "ui",
            "--store",
            workbench["store"].url,
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=20)


@pytest.mark.slow
def test_search_run_to_its_model_and_back(team_console: str, browser: Any, workbench: Any) -> None:
    page = _visit(browser, team_console + f"/runs/{workbench['search_run']}", "#search-plot svg")
    page.click("#outputs a.output-link")
    page.wait_for_selector("#made-by")
    assert page.url.endswith(f"/version/{workbench['best'].version}/team/clf")
    assert "Made by the search run team/search" in page.inner_text("#made-by")
    page.click("#made-by a.run-link")
    page.wait_for_selector("#search")
    assert workbench["search_run"] in page.url
    page.close()


def test_search_plot_labels_scale_and_title(
    team_console: str, browser: Any, workbench: Any
) -> None:
    page = _visit(browser, team_console + f"/runs/{workbench['search_run']}", "#search-plot svg")
    labels = page.evaluate("document.getElementById('search-plot').data[0].text")
    assert sorted(labels) == ["C=0.01", "C=0.1", "C=1.0", "C=10.0"]  # parameters, not digests
    assert page.inner_text("#best") in labels
    low, high = page.evaluate("document.getElementById('search-plot')._fullLayout.yaxis.range")
    scores = page.evaluate("document.getElementById('search-plot').data[0].y")
    assert low > 0.5 * min(scores) and high < 1.1 * max(scores)  # the scores' range, not from 0
    assert page.locator("#search-plot .gtitle").count() == 0  # the title is above the plot
    title = page.locator("h3.plot-title").bounding_box()
    bar = page.locator("#search-plot .modebar").bounding_box()
    assert title is not None and bar is not None
    assert title["y"] + title["height"] <= bar["y"]  # the toolbar does not cover the title
    assert page.locator("#candidates tbody tr").count() == 4
    page.close()


@pytest.mark.slow
def test_model_list_metrics_and_filters(team_console: str, browser: Any) -> None:
    page = _visit(browser, team_console + "/", "#models")
    row = page.locator("#models tbody tr", has_text="team/other")
    assert "auc=0.95" in row.inner_text()
    assert "0.30000000000000004" not in page.inner_text("#models")
    page.fill("input[name=tag]", "candidate")
    page.click("form.search button")
    page.wait_for_selector("#models")
    # the latest version of team/clf is not tagged: no model has the tag on its latest
    assert page.locator("a.model-link").count() == 0
    page.goto(team_console + "/?metric=auc>=0.9")
    assert [a.inner_text() for a in page.locator("a.model-link").all()] == ["team/other"]
    page.goto(team_console + "/?metric=auc")
    names = {a.inner_text() for a in page.locator("a.model-link").all()}
    assert names == {"team/clf", "team/other"}
    page.goto(team_console + "/?metric=auc>>1")
    assert "metric filter" in page.inner_text("body")
    page.close()


def test_tag_filter_finds_a_tagged_latest_version(team_console: str, workbench: Any) -> None:
    store = workbench["store"]
    store.put("team/tagged", {"w": np.arange(2)}, tags={"stage": "canary"})
    r = httpx.get(team_console + "/", params={"tag": "stage=canary"})
    assert "team/tagged" in r.text and "team/other" not in r.text
    r = httpx.get(team_console + "/", params={"tag": "stage=prod"})
    assert "team/tagged" not in r.text


@pytest.mark.slow
def test_floats_are_formatted(team_console: str, browser: Any, workbench: Any) -> None:
    page = _visit(
        browser, team_console + f"/version/{workbench['best'].version}/team/clf", "#metadata"
    )
    text = page.inner_text("#metadata")
    assert "0.3\n" in text + "\n" and "0.86" in text
    assert "0.30000000000000004" not in text and "0.8600000000000001" not in text
    page.close()


@pytest.mark.slow
def test_compare_three_versions(team_console: str, browser: Any) -> None:
    page = _visit(browser, team_console + "/model/team/clf", "#versions")
    boxes = page.locator("#versions input[type=checkbox]")
    for i in range(3):
        boxes.nth(i).check()
    page.click("#compare-button")
    page.wait_for_selector("#compare")
    assert page.locator("#compare thead th").count() == 4  # a label column + 3 versions
    rows = page.evaluate(
        "[...document.querySelectorAll('#compare tbody tr')]"
        ".map(tr => [...tr.cells].map(c => c.textContent))"
    )
    assert [r[1:] for r in rows if r[0] == "param C"] == [["3", "2", "1"]]
    page.close()


@pytest.mark.slow
def test_children_are_siblings_not_a_chain(team_console: str, browser: Any, workbench: Any) -> None:
    page = _visit(
        browser, team_console + f"/version/{workbench['best'].version}/team/clf", "#lineage"
    )
    children = page.locator("#lineage .children a.child")
    assert children.count() == 3
    boxes = [children.nth(i).bounding_box() for i in range(3)]
    assert len({round(b["x"]) for b in boxes}) == 1  # one column, one below the other
    assert len({round(b["y"]) for b in boxes}) == 3
    assert page.locator("#lineage .children .edge").count() == 0  # no arrow between children
    page.close()


@pytest.mark.slow
def test_checkpointers_list_counts_keys(team_console: str, browser: Any) -> None:
    page = _visit(browser, team_console + "/checkpointers", "#namespaces")
    text = page.inner_text("#namespaces")
    assert "built-in method" not in text
    row = page.locator("#namespaces tr", has_text="team/state")
    assert row.locator("td.n-keys").inner_text() == "1"
    page.close()


@pytest.mark.slow
def test_steps_run_is_a_table_not_raw_json(team_console: str, browser: Any, workbench: Any) -> None:
    run = workbench["store"].runs.list(kind="steps")[0]
    page = _visit(browser, team_console + f"/runs/{run.id}", "#steps-table")
    rows = page.locator("#steps-table tbody tr")
    assert rows.count() == 2
    assert "step_1" in rows.nth(0).inner_text() and "ran" in rows.nth(0).inner_text()
    assert not page.locator("#state").is_visible()  # the raw state is folded away
    page.click("#steps-table a.output-link >> nth=1")
    page.wait_for_selector("#audit")
    assert page.url.endswith("/version/1/team/training/v1/step_2")
    page.close()
