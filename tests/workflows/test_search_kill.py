"""Seed 002's search killed with SIGKILL at random points, rerun, and completed.

The search (a pipeline swapped over KNN, random forest, naive Bayes and logistic
regression, 19 candidates x 3 folds) runs in a real subprocess that is killed with
``kill -9`` (its whole process group, so pool workers die too) three times: once after
a random delay (possibly before any fit finished), twice after a random number of new
ledger entries. A last run completes it. Then:

* the final ``cv_results_`` equal those of an uninterrupted scikit-learn run;
* every killed run recorded every fit it finished, except those in flight: the fits
  it performed (counted by the scorer, one log line per fit) minus the entries it
  committed is at most the number of fits that can be in flight (running: 1
  sequentially, ``2 * n_jobs`` with a pool; or finished within the ledger's last
  commit interval, 0.2 s, i.e. at most 5 fits of 50 ms);
* the final run took exactly the recorded fits from the ledger and fitted the rest.

The random seed is printed on failure; set SAFEPOINT_KILL_SEED to replay one.

Also here, with real signals to real processes: Ctrl-C (SIGINT) prints one line saying
how many fits are saved, and a kill -9 during the refits of the best model of each type
loses only the refit in progress.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import search_seed002 as seed
from sklearn.model_selection import GridSearchCV

from safepoint.workflows.search import ResumableGridSearchCV
from safepoint.workflows.search._fit import _resolve_checkpoint
from safepoint.workflows.search._ledger import META_KEY, Ledger, recorded_fits

HERE = Path(__file__).resolve().parent
TOTAL = seed.N_CANDIDATES * seed.N_SPLITS
SLOW = 0.05  # seconds per scored fit: time to land kills mid-search


def count_entries(checkpoint: str) -> int:
    return recorded_fits(_resolve_checkpoint(checkpoint)[0])


def start(checkpoint: str, out: Path, log: Path, n_jobs: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "SEED002_LOG": str(log),
        "SEED002_SLOW": str(SLOW),
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import search_seed002; search_seed002.main()",
            checkpoint,
            str(out),
            str(n_jobs),
        ],
        env=env,
        start_new_session=True,  # its own process group: kill -9 reaches pool workers too
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def kill9(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.timeout(400)
@pytest.mark.slow
def test_seed002_search_killed_and_resumed(tmp_path: Path) -> None:
    seed_value = int(os.environ.get("SAFEPOINT_KILL_SEED", random.randrange(2**32)))
    rng = random.Random(seed_value)
    where = f"(SAFEPOINT_KILL_SEED={seed_value})"
    checkpoint = str(tmp_path / "ckpt")
    out = tmp_path / "out.json"

    # (how to decide when to kill, n_jobs): a random delay, then random entry counts.
    plans: list[tuple[str, float, int]] = [
        ("delay", rng.uniform(0.2, 4.0), 1),
        ("entries", rng.randint(2, 15), 2),
        ("entries", rng.randint(1, 12), 1),
    ]
    history: list[dict[str, Any]] = []
    for i, (how, amount, n_jobs) in enumerate(plans):
        before = count_entries(checkpoint) if Path(checkpoint).exists() else 0
        log = tmp_path / f"fits-{i}.log"
        proc = start(checkpoint, out, log, n_jobs)
        deadline = time.monotonic() + 180
        if how == "delay":
            time.sleep(amount)
        else:
            # Leave at least a few fits for the later runs, whatever the draw.
            target = min(before + int(amount), TOTAL - 8)
            while count_entries_safe(checkpoint) < target:
                assert proc.poll() is None, f"the search ended before the kill {where}: " + (
                    proc.stderr.read().decode() if proc.stderr else ""
                )
                assert time.monotonic() < deadline, f"no progress {where}"
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.04))  # not always right after a commit
        assert proc.poll() is None, f"run {i} finished before it was killed {where}"
        kill9(proc)
        after = count_entries_safe(checkpoint)
        performed = lines(log)
        committed = after - before
        # In flight: running or dispatched (1 sequentially, pre_dispatch="2*n_jobs" with a
        # pool), plus finished within the last commit interval (fits quicker than it are
        # grouped: at most interval / fit time of them, and one more being committed).
        grouped = math.ceil(ResumableGridSearchCV.commit_interval / SLOW) + 1
        in_flight = (1 if n_jobs == 1 else 2 * n_jobs) + grouped
        history.append(dict(run=i, how=how, before=before, after=after, performed=performed))
        assert committed <= performed <= committed + in_flight, f"{history} {where}"
        assert not out.exists()
        if after:
            # Whatever the instant of the kill, every recorded entry is whole and readable.
            cp = _resolve_checkpoint(checkpoint)[0]
            ledger = Ledger(cp, checkpoint)
            ledger.digest = cp.get(META_KEY)["digest"]
            assert len(ledger.results()) == after, f"{history} {where}"

    before = count_entries_safe(checkpoint)
    assert before < TOTAL
    log = tmp_path / "fits-final.log"
    proc = start(checkpoint, out, log, 1)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    final = json.loads(out.read_text())
    assert final["resumed"] == before, f"{history} {where}"
    assert final["run"] == TOTAL - before == lines(log), f"{history} {where}"
    assert count_entries(checkpoint) == TOTAL

    # Uninterrupted reference: scikit-learn's own GridSearchCV on the same search.
    X, y = seed.data()
    estimator, grid = seed.space()
    reference = GridSearchCV(estimator, grid, cv=seed.N_SPLITS, scoring=seed.logged_accuracy).fit(
        X, y
    )
    expected = seed.summary(reference.cv_results_)
    assert final["cv_results"] == expected, where
    assert final["best_params"] == {k: repr(v) for k, v in reference.best_params_.items()}


def count_entries_safe(checkpoint: str) -> int:
    """count_entries, or 0 while the killed run had not yet created the checkpoint."""
    try:
        return count_entries(checkpoint)
    except FileNotFoundError:
        return 0


# -- Ctrl-C ------------------------------------------------------------------------------
INTERRUPTED = re.compile(
    r"safepoint: search interrupted: (\d+) fits? saved in .+; "
    r"run the same command again to resume"
)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ctrl_c_says_in_one_line_how_many_fits_are_saved(tmp_path: Path) -> None:
    checkpoint = str(tmp_path / "ckpt")
    out = tmp_path / "out.json"
    proc = start(checkpoint, out, tmp_path / "fits.log", 1)
    deadline = time.monotonic() + 120
    while count_entries_safe(checkpoint) < 3:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends
    _, err = proc.communicate(timeout=60)
    text = err.decode()
    # the interruption still ends the program as Ctrl-C does, without a traceback
    assert proc.returncode == -signal.SIGINT, text
    assert "Traceback" not in text
    assert len(text.strip().splitlines()) == 1, text
    match = INTERRUPTED.fullmatch(text.strip())
    assert match is not None, text
    saved = int(match.group(1))
    assert saved == count_entries(checkpoint) >= 3
    assert not out.exists()

    # ... and the same command resumes with exactly those fits
    proc = start(checkpoint, out, tmp_path / "fits-2.log", 1)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    final = json.loads(out.read_text())
    assert final["resumed"] == saved and final["run"] == TOTAL - saved


@pytest.mark.slow
def test_ctrl_c_in_python_still_raises_keyboard_interrupt(tmp_path: Path) -> None:
    """A caller (a notebook, a retry loop) catches it as always; the line is printed once."""
    script = (
        "import os, signal, threading, numpy as np, safepoint as sp\n"
        "from sklearn.neighbors import KNeighborsClassifier\n"
        "X = np.random.default_rng(0).random((60, 3)); y = (X[:, 0] > .5).astype(int)\n"
        "def scorer(est, X, y):\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    return 0.0\n"
        "try:\n"
        "    sp.ResumableGridSearchCV(KNeighborsClassifier(), {'n_neighbors': [1, 3]},\n"
        f"        cv=3, scoring=scorer, checkpoint={str(tmp_path / 'ck')!r}).fit(X, y)\n"
        "except KeyboardInterrupt:\n"
        "    print('caught')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "caught"
    assert INTERRUPTED.fullmatch(proc.stderr.strip()), proc.stderr


# -- refits ------------------------------------------------------------------------------
def start_refits(store: Path, out: Path, log: Path, slow: float) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "REFIT_LOG": str(log),
        "REFIT_SLOW": str(slow),
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import search_refit_seed; search_refit_seed.main()",
            str(store),
            str(out),
        ],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def best_models(store: Path) -> list[str]:
    import safepoint as sp

    if not (store / "catalog.db").exists():
        return []
    with sp.Store(store) as s:
        return [m.rpartition("/")[2] for m in s.models("seed002/best")]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_kill_during_the_refits_loses_only_the_refit_in_progress(tmp_path: Path) -> None:
    import search_refit_seed as refit_seed

    store, out = tmp_path / "store", tmp_path / "out.json"
    killed_log, final_log = tmp_path / "refits-0.log", tmp_path / "refits-1.log"
    # each refit takes a second: the kill lands inside the refit after the first one saved
    proc = start_refits(store, out, killed_log, 1.0)
    deadline = time.monotonic() + 180
    while not best_models(store):
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "no refit was saved"
        time.sleep(0.05)
    time.sleep(0.3)
    kill9(proc)
    done = set(best_models(store))
    assert 1 <= len(done) < len(refit_seed.LABELS)
    assert not out.exists()

    proc = start_refits(store, out, final_log, 0.0)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err.decode()
    final = json.loads(out.read_text())
    overall = final["best_label"]
    # every fit and the search's own refit come from the checkpoint
    assert final["resumed"] == 9 * 3 and final["refit_resumed"] == 1
    refitted = {label for label, b in final["best"].items() if b["refitted"]}
    # the models saved before the kill are taken from the store; the best overall is the
    # search's refit; only the others are fitted, once each
    assert refitted == set(refit_seed.LABELS) - done - {overall}
    assert lines(final_log) == len(refitted)
    for label in done:
        assert final["best"][label]["ref"] == f"seed002/best/{label}@1"
    # the killed run: the search's refit, those saved, and at most the one in flight
    before_kill = 1 + len(done - {overall})
    assert before_kill <= lines(killed_log) <= before_kill + 1
