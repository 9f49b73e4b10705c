"""The main job of the README: a tour of safepoint on the embedded default.

Each part prints what it does and checks its own result, so that the README's
first command fails loudly if anything is off. Later parts (store, steps,
search, scoring) register themselves in ``PARTS``.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FormatError, SafepointError, UntrustedTypesError

Say = Callable[[str], None]
PARTS: list[tuple[str, Callable[[Path, Say], None]]] = []


def part(title: str) -> Callable[[Callable[[Path, Say], None]], Callable[[Path, Say], None]]:
    def deco(fn: Callable[[Path, Say], None]) -> Callable[[Path, Say], None]:
        PARTS.append((title, fn))
        return fn

    return deco


class _Exploit:
    """A pickle payload that would run a shell command when unpickled."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("echo PWNED > /tmp/safepoint-demo-pwned",))


@part("format: save, inspect, load a model; refuse a crafted file")
def format_part(workdir: Path, say: Say) -> None:
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import safepoint as sp

    X, y = make_classification(n_samples=2000, n_features=20, random_state=0)
    model = make_pipeline(StandardScaler(), RandomForestClassifier(50, random_state=0)).fit(X, y)
    path = workdir / "model.sp"
    res = sp.dump(model, path, golden=X[:20], metadata={"dataset": "make_classification"})
    say(f"saved {path} ({res.size:,} bytes, digest {res.digest[:12]})")
    info = sp.inspect(path)
    say(
        f"inspect: {info.root_type}, {len(info.types)} types, untrusted: {info.untrusted or 'none'}"
    )
    loaded = sp.load(path)
    same = bool(np.array_equal(loaded.predict(X), model.predict(X)))
    say(f"loaded safely; predictions identical: {same}")
    if not same:
        raise SystemExit("demo failed: predictions differ after load")
    report = sp.verify(path)
    say(f"verify: {'OK' if report.ok else 'FAILED'} (golden {report.golden})")

    evil = workdir / "evil.sp"
    evil.write_bytes(pickle.dumps(_Exploit()))
    try:
        sp.load(evil)
    except FormatError as exc:
        say(f"a pickle renamed to .sp is refused: {str(exc)[:90]}...")
    else:  # pragma: no cover - would be a security bug
        raise SystemExit("demo failed: a pickle file was accepted")

    class_ref = workdir / "untrusted.sp"
    sp.dump({"scorer": np.random.RandomState(0), "fn": os.path.join}, class_ref)
    try:
        sp.load(class_ref)
    except UntrustedTypesError as exc:
        say(f"a file naming os.path.join is refused before any import: {exc.types}")
    if Path("/tmp/safepoint-demo-pwned").exists():  # pragma: no cover
        raise SystemExit("demo failed: the exploit ran")


@part("store: put with an alias, load back by alias")
def store_part(workdir: Path, say: Say) -> None:
    from sklearn.datasets import make_classification
    from sklearn.ensemble import HistGradientBoostingClassifier

    import safepoint as sp

    X, y = make_classification(n_samples=2000, n_features=20, random_state=1)
    model = HistGradientBoostingClassifier(max_iter=50, random_state=0).fit(X, y)
    store = sp.Store(workdir / "store")  # a local folder with an embedded SQLite catalog
    mv = store.put(
        "demo/churn",
        model,
        alias="production",
        metrics={"accuracy": float(model.score(X, y))},
        data_digest=X.tobytes(),
    )
    say(f"put {mv.ref} ({mv.size:,} bytes, digest {mv.digest[:12]}) with alias 'production'")
    loaded = store.get("demo/churn", "production")
    same = bool(np.array_equal(loaded.predict(X), model.predict(X)))
    say(
        f"loaded demo/churn@production -> version {store.info('demo/churn@production').version}"
        f"; predictions identical: {same}"
    )
    if not same:
        raise SystemExit("demo failed: the model from the store predicts differently")
    try:  # aliases move by compare-and-swap: a stale expected= is refused
        store.set_alias("demo/churn", "production", mv.version, expected=mv.version + 1)
    except sp.AliasConflictError as exc:
        say(f"moving the alias with a stale expected= is refused: {str(exc)[:70]}...")
    else:  # pragma: no cover
        raise SystemExit("demo failed: an alias moved without compare-and-swap")
    ckpt = store.checkpointer("demo/scoring", description="offsets of the scoring job")
    ckpt.set("model", mv.ref)
    say(
        f"checkpointer: model={ckpt.get('model')!r}; {len(store.log())} audit log entries; "
        "`safepoint ls --store " + str(workdir / "store") + "` lists the models"
    )


@part("scoring: read, apply, write, exactly once, with a hot reload")
def scoring_part(workdir: Path, say: Say) -> None:
    import pandas as pd
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression

    import safepoint as sp
    from safepoint.workflows.scoring import ScoringPipeline

    store = sp.Store(workdir / "store")
    rng = np.random.default_rng(0)
    cols = [f"FEATURE_{i}" for i in range(1, 6)]
    X = pd.DataFrame(rng.random((2000, 5)), columns=cols)
    y = (X.FEATURE_1 + X.FEATURE_2 > 1).astype(int)
    mv = store.put("demo/predictive-model", LogisticRegression().fit(X, y), alias="production")
    feats = X.assign(id=np.arange(len(X)))[["id", *cols]]
    src = workdir / "features.parquet"
    feats.to_parquet(src, row_group_size=500)
    out = workdir / "predictions"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    schema = """
      type Predictions @schema {
        id: Int! @key
        prediction: Float!
        model_version: String
      }
    """
    moved: list[int] = []

    def predict(df: pd.DataFrame, clf: object) -> pd.DataFrame:
        if not moved and df["id"].iloc[0] >= 1000:
            # promote a new version mid-job: the pipeline switches at the next batch
            v2 = store.put("demo/predictive-model", DummyClassifier(strategy="prior").fit(X, y))
            store.set_alias("demo/predictive-model", "production", v2.version, expected=mv.version)
            moved.append(v2.version)
        return pd.DataFrame({"id": df["id"], "prediction": clf.predict_proba(df[cols])[:, 1]})  # type: ignore[attr-defined]

    def pipeline() -> ScoringPipeline:
        p = ScoringPipeline(
            "demo/predictive-model@production", store=store, batch_size=250, quiet=True
        )
        p.write(p.apply(p.read(src), predict, batch=True), out, schema=schema)
        return p

    report = pipeline().run()
    say(
        f"scored {report.read:,} records into {out} with model versions {report.versions} "
        f"(alias moved mid-job)"
    )
    again = pipeline().run()
    say(
        f"run again: resumed from offsets {again.resumed_from}, wrote {again.written} more "
        "(exactly once)"
    )
    written = pd.concat(pd.read_parquet(f) for f in sorted(out.glob("part-*.parquet")))
    if sorted(written["id"]) != list(range(len(X))):
        raise SystemExit("demo failed: scoring lost or duplicated records")
    say(f"predictions by version: {written.groupby('model_version').size().to_dict()}")


@part("steps: a resumable workflow")
def steps_part(workdir: Path, say: Say) -> None:
    import shutil

    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    import safepoint as sp

    class Training(sp.Steps):
        def step_1(self, outputs: Any) -> Any:
            X, y = make_classification(n_samples=5000, n_features=20, random_state=0)
            return {"X": X, "y": y}

        def step_2(self, outputs: Any) -> Any:
            data = outputs["step_1"]
            return {"X": StandardScaler().fit_transform(data["X"]), "y": data["y"]}

        def step_3(self, outputs: Any) -> Any:
            data = outputs["step_2"]
            return LogisticRegression(C=self.params["C"]).fit(data["X"], data["y"])

    folder = workdir / "steps-store"
    if folder.exists():
        shutil.rmtree(folder)  # start from nothing, so that the first run runs every step

    def training(C: float = 1.0) -> Training:
        return Training(name="demo/training", store=folder, version=1, params={"C": C})

    first = training().run()
    say(f"first run: ran {', '.join(first.ran)}")
    again = training().run()
    say(f"nothing changed: restored {', '.join(again.restored)}, ran {again.ran or 'nothing'}")
    if again.ran:
        raise SystemExit("demo failed: an unchanged workflow reran steps")
    forced = training().run(start_from=2)
    say(f"run(start_from=2): restored {', '.join(forced.restored)}, reran {', '.join(forced.ran)}")
    changed = training(C=0.1)
    say(f"status with C=0.1: {changed.status()['step_3'].explanation}")
    report = changed.run()
    for line in str(report).splitlines()[1:]:
        say(line.strip())
    if report.ran != ["step_3"]:
        raise SystemExit("demo failed: a parameter change reran the wrong steps")
    outputs = changed.load_outputs()
    model, data = outputs["step_3"], outputs["step_2"]
    say(f"load_outputs() in a notebook: accuracy {model.score(data['X'], data['y']):.3f}")


def _demo_search(checkpoint: Any) -> tuple[Any, Any, Any]:
    """A search: one pipeline step swapped over four model types, with a checkpoint."""
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    import safepoint as sp

    X, y = make_classification(n_samples=800, n_features=12, n_informative=6, random_state=0)
    space = sp.search_spaces(
        {
            "knn": (KNeighborsClassifier(), {"n_neighbors": [1, 5, 15, 31]}),
            "rf": (
                RandomForestClassifier(random_state=0),
                {"n_estimators": [30, 60], "max_depth": [4, None]},
            ),
            "nb": (GaussianNB(), {"var_smoothing": [1e-9, 1e-6]}),
            "lr": (LogisticRegression(max_iter=500), {"C": [0.1, 1.0, 10.0]}),
        },
        steps=[("scale", StandardScaler())],
        step="mmc",
    )
    return sp.ResumableGridSearchCV(*space, cv=3, checkpoint=checkpoint), space, (X, y)


def _demo_search_child(checkpoint: str) -> None:
    search, _, (X, y) = _demo_search(checkpoint)
    search.fit(X, y)


@part("search: one search over four model types, killed with SIGKILL, resumed")
def search_part(workdir: Path, say: Say) -> None:
    import shutil
    import signal
    import subprocess
    import sys
    import time

    from sklearn.model_selection import GridSearchCV, ParameterGrid

    import safepoint as sp

    from .workflows.search._ledger import recorded_fits

    folder = workdir / "search-store"
    if folder.exists():
        shutil.rmtree(folder)  # start from nothing, so that the kill lands mid-search
    store = sp.Store(folder)
    ledger = store.checkpointer("search")
    search, space, (X, y) = _demo_search(str(folder))
    total = len(ParameterGrid(space.param_grid)) * 3
    code = "import sys; from safepoint.demo import _demo_search_child as c; c(sys.argv[1])"
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(folder)],
        start_new_session=True,  # its own process group: the kill reaches everything it ran
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 300
    while recorded_fits(ledger) < total // 3 and child.poll() is None:
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if child.poll() is None:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        say(
            f"search in a subprocess, killed with SIGKILL: {recorded_fits(ledger)} of {total} "
            "fits were committed to the ledger"
        )
    elif child.returncode != 0:
        err = child.stderr.read().decode() if child.stderr else ""
        raise SystemExit(f"demo failed: the search subprocess failed:\n{err[-2000:]}")
    else:
        say(f"the search subprocess finished all {total} fits before it could be killed")
    done = recorded_fits(ledger)
    search.fit(X, y)
    say(
        f"rerun of the same code: {search.n_fits_resumed_} fits taken from the checkpoint, "
        f"{search.n_fits_run_} fitted now"
    )
    if search.n_fits_resumed_ != done or search.n_fits_run_ != total - done:
        raise SystemExit("demo failed: the resumed search did not reuse exactly the ledger")
    for label, best in space.best_by_label(search).items():
        params = {k.split("__")[-1]: v for k, v in best["params"].items() if "__" in k}
        say(f"best {label}: {best['score']:.3f} {params}")
    plain = GridSearchCV(*space, cv=3).fit(X, y)
    same = bool(
        np.array_equal(plain.cv_results_["mean_test_score"], search.cv_results_["mean_test_score"])
    )
    say(f"scores identical to an uninterrupted scikit-learn GridSearchCV: {same}")
    if not same:
        raise SystemExit("demo failed: the resumed search's scores differ from scikit-learn's")
    (run,) = store.runs.list(kind="search")
    say(
        f"runs table: {run.name} {run.status}, progress {run.progress:.0%}, "
        f"best score {run.state.get('best_score', float('nan')):.3f}"
    )
    best = store.put("demo/best-model", search.best_estimator_, run_id=search.run_id_)
    say(f"the refit best model is {best.ref}, linked to the search run {search.run_id_}")
    if [v.ref for v in store.find(run_id=run.id)] != [best.ref]:
        raise SystemExit("demo failed: the best model is not linked to its search run")


def run(
    workdir: str | os.PathLike[str] = "safepoint-demo", quiet: bool = False
) -> list[dict[str, Any]]:
    """Run every part of the demo in ``workdir``; what each part said, in order."""
    from rich.console import Console

    console = Console(quiet=quiet)
    root = Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    order = ["format", "store", "steps", "search", "scoring"]
    parts = sorted(
        PARTS,
        key=lambda p: next(
            (i for i, word in enumerate(order) if p[0].startswith(word)), len(order)
        ),
    )
    said: list[dict[str, Any]] = []
    for i, (title, fn) in enumerate(parts, 1):
        console.rule(f"[bold]{i}. {title}")
        lines: list[str] = []

        def say(s: str, lines: list[str] = lines) -> None:
            lines.append(s)
            console.print("  " + s, highlight=False, markup=False)

        try:
            fn(root, say)
        except SafepointError as exc:
            raise SystemExit(f"demo failed in part {i} ({title}): {exc}") from exc
        said.append({"part": title, "lines": lines})
    console.print(f"[green]demo complete[/green]; files are in {root.resolve()}")
    return said
