"""Cold start: what ``import safepoint`` and ``safepoint score`` import, in a fresh process.

Every import is start-up time a script or a scoring job pays before its first
prediction (bench/bench_coldstart.py measures it). The library itself needs
numpy and xxhash only; ``safepoint score`` needs nothing that a plain
``pickle.load`` + pandas script scoring the same model does not import too, except
click, xxhash and safepoint itself, and of safepoint not the modules of other
frameworks' models nor of stores. Two costs that are not imports are pinned by
counts, not times: the load guard reads each frame of the stack a bounded number
of times per module imported inside it, and the command's start-up runs no full
garbage collection.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]

# the third-party top-level packages now in sys.modules, printed as JSON at exit; with
# _report(), safepoint's own modules, full collections and the guard's frame reads too
_REPORT = (
    "import atexit, gc, json, sys\n"
    "STATS = {'gen2': 0, 'f_code': 0}\n"
    "def _third_party():\n"
    "    names = {m.split('.')[0] for m in list(sys.modules)}\n"
    "    print('\\nMODULES' + json.dumps(sorted(n for n in names\n"
    "        if n not in sys.stdlib_module_names and not n.startswith('_')\n"
    "        and n not in ('cython_runtime', 'sitecustomize', 'usercustomize'))))\n"
    "    print('\\nOWN' + json.dumps(sorted(m for m in sys.modules\n"
    "        if m.startswith('safepoint'))))\n"
    "    print('\\nSTATS' + json.dumps({**STATS, 'modules': len(sys.modules)}))\n"
    "atexit.register(_third_party)\n"
    "def _gc(phase, info):\n"
    "    if phase == 'start' and info['generation'] == 2:\n"
    "        STATS['gen2'] += 1\n"
    "gc.callbacks.append(_gc)\n"
    # a frame's f_code is read through an audited attribute: the guard's stack walks
    "def _audit(event, args):\n"
    "    if event == 'object.__getattr__' and args[1] == 'f_code':\n"
    "        STATS['f_code'] += 1\n"
    "sys.addaudithook(_audit)\n"
)


def _report(code: str, cwd: Path, *argv: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", _REPORT + code, *argv],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "SAFEPOINT_QUIET": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out: dict[str, Any] = {}
    for key in ("MODULES", "OWN", "STATS"):
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith(key)][-1]
        out[key] = json.loads(line[len(key) :])
    return out


def _imported(code: str, cwd: Path, *argv: str) -> set[str]:
    return set(_report(code, cwd, *argv)["MODULES"])


def test_import_safepoint_pulls_only_numpy_and_xxhash(tmp_path: Path) -> None:
    assert _imported("import safepoint", tmp_path) == {"numpy", "safepoint", "xxhash"}


def test_score_command_entry_pulls_only_click_beyond_the_library(tmp_path: Path) -> None:
    # the CLI's command registration and option parsing, up to the command body
    code = (
        "import sys; from safepoint.cli.main import main\n"
        "sys.argv = ['safepoint', 'score', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
    )
    assert _imported(code, tmp_path) == {"click", "numpy", "safepoint", "xxhash"}


@pytest.mark.slow  # two fresh processes importing scikit-learn and pandas
def test_score_imports_nothing_a_pickle_script_does_not(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    ensemble = pytest.importorskip("sklearn.ensemble")
    import safepoint as sp

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.standard_normal((200, 4)), columns=["a", "b", "c", "d"])
    model = ensemble.RandomForestClassifier(n_estimators=3, random_state=0)
    model.fit(X, (X.a > 0).astype(int))
    sp.dump(model, tmp_path / "model.sp")
    with open(tmp_path / "model.pkl", "wb") as f:
        pickle.dump(model, f, protocol=5)
    (tmp_path / "in.jsonl").write_text(json.dumps(dict(X.iloc[0])) + "\n")

    report = _report(
        "import sys; from safepoint.cli.main import main\n"
        "sys.argv = ['safepoint', 'score', '-m', 'model.sp', '-i', 'in.jsonl', '-o', 'out.jsonl']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n",
        tmp_path,
    )
    score = set(report["MODULES"])
    assert (tmp_path / "out.jsonl").read_text().count("prediction") == 1
    # safepoint's own: not the scorers of other frameworks' models, nor adapters, nor a
    # store (a .sp file, no $SAFEPOINT_STORE), nor the writing side of the format
    own = set(report["OWN"])
    assert "safepoint.workflows.scoring.pipeline" in own
    for lazy in (
        "safepoint.workflows.scoring.spark_scoring",
        "safepoint.workflows.scoring.h2o_scoring",
        "safepoint.workflows.scoring.serve",
        "safepoint.workflows.scoring.store_model",
        "safepoint.adapters._common",
        "safepoint.stores",
        "safepoint.importers.api",
    ):
        assert lazy not in own, lazy
    stats = report["STATS"]
    # start-up (imports: ~1,700 modules, and the load) runs with the collector paused
    # and frozen after: no full collection walks the 140,000 objects it made
    assert stats["gen2"] == 0, stats
    # the guard checks the imports in progress once per import, not once per event
    # (each module imported inside the load raises 2-10 events, and a walk of the
    # whole stack reads ~100 frames): ~16 frame reads per module imported, ~200 before
    assert stats["f_code"] < 100 * stats["modules"] // 2, stats
    floor = _imported(
        "import json, pickle, sys\nimport pandas as pd\n"
        "model = pickle.load(open('model.pkl', 'rb'))\n"
        "X = pd.DataFrame([json.loads(line) for line in open('in.jsonl')])\n"
        "print(model.predict(X))\n",
        tmp_path,
    )
    assert score - floor == {"click", "safepoint", "xxhash"}
