"""Checkpoint overhead of a resumable search: ResumableGridSearchCV vs scikit-learn's GridSearchCV.

    python -m bench.bench_search --fits 120 --fit-ms 50 --repeat 7

The same grid (random forests on a 2,000 x 20 classification problem, sized so that one
fit takes about ``--fit-ms`` milliseconds of CPU; 3 folds) runs as

* ``sklearn``: scikit-learn's GridSearchCV, no checkpoint (the baseline);
* ``checkpoint``: ResumableGridSearchCV with ``checkpoint=`` the path of a new local store
  (created by the search: catalog and schema included; every fit committed to the SQLite
  catalog, durable, ``synchronous=FULL``);
* ``checkpoint_store``: the same with ``checkpoint=store.checkpointer(...)`` of a store
  that exists already (a new checkpointer name each run);
* ``resume``: the ``checkpoint`` search again on its full ledger (nothing left to fit: the
  cost of reading the results back, plus the refit).

Three measures of the overhead, because a shared machine makes wall times noisy:

* ``overhead_pct``: median over repetitions of the paired ratio ``checkpoint / sklearn``
  (both run back to back, in alternating order, so that load drifts hit both alike);
* ``accounted_pct``: the time the search's own thread spends in checkpoint code (opening
  the store and the ledger, digests, handing results to the writer, the final flush, the
  runs table), plus the CPU time of the ledger's writer thread (counted in full, as if
  no core were free to run it beside the fits), over the median scikit-learn time. This
  one does not depend on what else the machine runs;
* medians and best-of-N of each variant's wall time, for reference.

Target: <= 5% with >= 100 fits of ~50 ms each.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np


def _problem() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification

    return make_classification(n_samples=2000, n_features=20, n_informative=8, random_state=0)


def _calibrate(X: np.ndarray, y: np.ndarray, fit_ms: float) -> int:
    """The number of trees for which one fit on a training fold takes about ``fit_ms``."""
    from sklearn.ensemble import RandomForestClassifier

    n_train = len(X) * 2 // 3
    trees = 8
    for _ in range(3):
        times = []
        for _ in range(3):
            # CPU time, best of three: on a shared machine wall time measures the neighbours.
            t = time.process_time()
            RandomForestClassifier(trees, max_features=5, random_state=0).fit(
                X[:n_train], y[:n_train]
            )
            times.append(time.process_time() - t)
        per_tree = min(times) / trees
        trees = max(1, round(fit_ms / 1000 / per_tree))
    return trees


def _grid(n_candidates: int) -> dict[str, list[Any]]:
    leaves = list(range(1, n_candidates // 4 + 1))
    return {"max_features": [3, 5, 7, 9], "min_samples_leaf": leaves}


class _Accounting:
    """Times the checkpoint code of a search (see the module docstring, ``accounted_pct``)."""

    def __init__(self) -> None:
        self.main = 0.0  # wall seconds of the search's thread inside checkpoint code
        self.writer_cpu = 0.0  # CPU seconds of the ledger writer threads
        self.depth = 0

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        from safepoint.workflows import _ledger, search

        patches: list[tuple[Any, str, Any]] = []

        def timed(owner: Any, name: str) -> None:
            original = getattr(owner, name)

            @functools.wraps(original)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                if threading.current_thread() is not threading.main_thread():
                    return original(*args, **kwargs)
                self.depth += 1
                t = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    self.depth -= 1
                    if self.depth == 0:
                        self.main += time.perf_counter() - t

            patches.append((owner, name, original))
            setattr(owner, name, wrapper)

        original_run: Callable[..., Any] = _ledger.LedgerWriter._run

        def run(writer: Any) -> None:
            t = time.thread_time()
            try:
                original_run(writer)
            finally:
                self.writer_cpu += time.thread_time() - t

        patches.append((_ledger.LedgerWriter, "_run", original_run))
        _ledger.LedgerWriter._run = run  # type: ignore[method-assign,assignment]
        timed(search._ResumableSearchMixin, "_open_ledger")  # store, digests, ledger meta
        timed(_ledger.Ledger, "results")
        timed(_ledger.LedgerWriter, "__init__")
        timed(_ledger.LedgerWriter, "put")
        timed(_ledger.LedgerWriter, "close")
        timed(search._RunReporter, "start")
        timed(search._RunReporter, "finish")
        timed(search, "fingerprint")  # candidate keys
        timed(search, "splits_digest")
        from safepoint.stores.store import Store

        timed(Store, "close")
        try:
            yield
        finally:
            for owner, name, original in reversed(patches):
                setattr(owner, name, original)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fits", type=int, default=120, help="total fits (candidates x 3 folds)")
    ap.add_argument("--fit-ms", type=float, default=50.0, help="target CPU time of one fit")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--n-jobs", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print one JSON line only")
    args = ap.parse_args(argv)

    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import GridSearchCV

    import safepoint as sp

    X, y = _problem()
    trees = _calibrate(X, y, args.fit_ms)
    estimator = RandomForestClassifier(trees, random_state=0)
    grid = _grid(max(4, args.fits // 3))
    n_fits = len(grid["max_features"]) * len(grid["min_samples_leaf"]) * 3
    work = tempfile.mkdtemp(prefix="bench-search-")
    variants = ["sklearn", "checkpoint", "checkpoint_store"]
    times: dict[str, list[float]] = {v: [] for v in [*variants, "resume"]}
    accounted: dict[str, list[float]] = {"checkpoint": [], "checkpoint_store": []}
    fit_times: list[float] = []
    store = sp.Store(os.path.join(work, "shared-store"))
    try:
        for rep in range(args.repeat):
            ckpt = os.path.join(work, f"store-{rep}")
            order = variants if rep % 2 == 0 else variants[::-1]
            for variant in [*order, "resume"]:
                if variant == "sklearn":
                    search: Any = GridSearchCV(estimator, grid, cv=3, n_jobs=args.n_jobs)
                else:
                    where: Any = ckpt
                    if variant == "checkpoint_store":
                        where = store.checkpointer(f"bench/search-{rep}")
                    search = sp.ResumableGridSearchCV(
                        estimator, grid, cv=3, n_jobs=args.n_jobs, checkpoint=where
                    )
                acct = _Accounting()
                with acct.active() if variant in accounted else contextlib.nullcontext():
                    t = time.perf_counter()
                    search.fit(X, y)
                    times[variant].append(time.perf_counter() - t)
                if variant in accounted:
                    accounted[variant].append(acct.main + acct.writer_cpu)
                    assert search.n_fits_run_ == n_fits
                if variant == "sklearn":
                    fit_times.append(float(np.mean(search.cv_results_["mean_fit_time"])))
                if variant == "resume":
                    assert search.n_fits_run_ == 0 and search.n_fits_resumed_ == n_fits
            shutil.rmtree(ckpt, ignore_errors=True)
    finally:
        store.close()
        shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}

    def paired(variant: str) -> float:
        ratios = [c / s for c, s in zip(times[variant], times["sklearn"], strict=True)]
        return round(100 * (statistics.median(ratios) - 1), 2)

    result = {
        "fits": n_fits,
        "n_jobs": args.n_jobs,
        "trees": trees,
        "mean_fit_ms": round(1000 * statistics.median(fit_times), 1),
        "repeat": args.repeat,
        "sklearn_s": round(med["sklearn"], 3),
        "checkpoint_s": round(med["checkpoint"], 3),
        "checkpoint_store_s": round(med["checkpoint_store"], 3),
        "resume_s": round(med["resume"], 3),
        "overhead_pct": paired("checkpoint"),
        "overhead_store_pct": paired("checkpoint_store"),
        "accounted_ms": round(1000 * statistics.median(accounted["checkpoint"]), 1),
        "accounted_pct": round(
            100 * statistics.median(accounted["checkpoint"]) / med["sklearn"], 2
        ),
        "accounted_store_ms": round(1000 * statistics.median(accounted["checkpoint_store"]), 1),
        "accounted_store_pct": round(
            100 * statistics.median(accounted["checkpoint_store"]) / med["sklearn"], 2
        ),
        "best": {k: round(v, 3) for k, v in best.items()},
        "runs": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "load_avg": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{n_fits} fits of ~{result['mean_fit_ms']} ms (n_jobs={args.n_jobs}), "
            f"{args.repeat} repetitions, load average {result['load_avg']}:\n"
            f"  scikit-learn GridSearchCV            {med['sklearn']:.3f} s (median)\n"
            f"  checkpoint=<new store path>          {med['checkpoint']:.3f} s: paired "
            f"{result['overhead_pct']:+.2f}%, accounted {result['accounted_ms']} ms = "
            f"{result['accounted_pct']:.2f}%\n"
            f"  checkpoint=store.checkpointer(...)   {med['checkpoint_store']:.3f} s: paired "
            f"{result['overhead_store_pct']:+.2f}%, accounted {result['accounted_store_ms']} "
            f"ms = {result['accounted_store_pct']:.2f}%\n"
            f"  resume on the full ledger            {med['resume']:.3f} s\n"
            f"  runs: {result['runs']}"
        )
    return result


if __name__ == "__main__":
    main()
