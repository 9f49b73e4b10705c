"""Step workflows across real processes: seed 001's example, kill -9, two runs at once, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import safepoint as sp

PY = sys.executable
SRC = str(Path(sp.__file__).resolve().parent.parent)

# -- seed 001, written against safepoint -------------------------------------------------
SEED_SCRIPT = """
import json
import sys

import numpy as np
from sklearn.linear_model import LogisticRegression

import safepoint as sp


def read_data_from_csv():
    return np.loadtxt(sys.argv[2], delimiter=",")


def clean_data(dataset):
    return dataset[~np.isnan(dataset).any(axis=1)]


def add_new_features(dataset):
    x, y = dataset[:, :-1], dataset[:, -1:]
    return np.hstack([x, x ** 2, y])


class ModelTraining(sp.Steps):
    def step_1(self, outputs):
        dataset = read_data_from_csv()
        cleaned_dataset = clean_data(dataset)
        return cleaned_dataset

    def step_2(self, outputs):
        dataset = outputs['step_1']
        dataset = add_new_features(dataset)
        return dataset

    def step_3(self, outputs):
        dataset = outputs['step_2']
        model = LogisticRegression()
        model.fit(dataset[:, :-1], dataset[:, -1])
        return model


if __name__ == '__main__':
    checkpoints = ModelTraining(
        name='model-training',
        store=sys.argv[1],
        version=1,
    )
    start_from = int(sys.argv[3]) if len(sys.argv) > 3 else None
    report = checkpoints.run(start_from=start_from)
    why = {s.step: s.explanation for s in report.steps}
    print(json.dumps({"ran": report.ran, "restored": report.restored, "why": why}))
"""

NOTEBOOK = """
import json, sys
import numpy as np
from main_script import ModelTraining

checkpoints = ModelTraining(
    name='model-training',
    store=sys.argv[1],
    version=1,
)
outputs = checkpoints.load_outputs()
model, data = outputs['step_3'], outputs['step_2']
print(json.dumps({
    "keys": list(outputs),
    "rows": [len(outputs['step_1']), len(data)],
    "accuracy": float(model.score(data[:, :-1], data[:, -1])),
    "predictions": model.predict(data[:5, :-1]).tolist(),
}))
"""


def _run(args: list[str], cwd: Path, timeout: float = 120, **env: str) -> dict[str, Any]:
    proc = subprocess.run(
        [PY, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        # this checkout's safepoint, not whichever one is installed
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(cwd), SRC]), **env},
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.slow
def test_seed_001_example(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 3))
    y = (x[:, 0] + x[:, 1] ** 2 > 1).astype(float)
    data = np.column_stack([x, y])
    data[::50, 1] = np.nan  # dirty rows that step_1 cleans
    csv = tmp_path / "data.csv"
    np.savetxt(csv, data, delimiter=",")
    (tmp_path / "main_script.py").write_text(SEED_SCRIPT)
    (tmp_path / "notebook.py").write_text(NOTEBOOK)
    store = str(tmp_path / "checkpoints")

    first = _run(["main_script.py", store, str(csv)], tmp_path)
    assert (first["ran"], first["restored"]) == (["step_1", "step_2", "step_3"], [])
    second = _run(["main_script.py", store, str(csv), "2"], tmp_path)
    assert (second["ran"], second["restored"]) == (["step_2", "step_3"], ["step_1"])
    # notebook in a second process
    nb = _run(["notebook.py", store], tmp_path)
    assert nb["keys"] == ["step_1", "step_2", "step_3"]
    assert nb["rows"] == [490, 490]
    assert nb["accuracy"] > 0.8
    # the same model, rebuilt here, predicts the same
    from sklearn.linear_model import LogisticRegression

    clean = data[~np.isnan(data).any(axis=1)]
    feats = np.hstack([clean[:, :-1], clean[:, :-1] ** 2])
    expected = LogisticRegression().fit(feats, clean[:, -1]).predict(feats[:5])
    assert nb["predictions"] == expected.tolist()
    # a third run restores everything (the code, data and params did not change)
    sys.path.insert(0, str(tmp_path))
    try:
        import main_script  # type: ignore[import-not-found]

        sys.argv = ["main_script.py", store, str(csv)]
        report = main_script.ModelTraining(name="model-training", store=store, version=1).run()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("main_script", None)
    assert report.ran == [] and report.restored == ["step_1", "step_2", "step_3"], str(report)

    # the data file grows: step_1 reruns and says why; so do the steps that read it
    size = csv.stat().st_size
    with csv.open("a") as fh:
        np.savetxt(fh, data[:100], delimiter=",")
    grown = _run(["main_script.py", store, str(csv)], tmp_path)
    assert grown["ran"] == ["step_1", "step_2", "step_3"]
    from safepoint.workflows.steps._files import human_size

    assert grown["why"]["step_1"] == (
        f"step_1 reruns: data.csv changed: {human_size(size)} -> {human_size(csv.stat().st_size)}"
    )
    assert grown["why"]["step_2"] == "step_2 reruns: step_1's output changed"
    # a helper the step calls is edited: that step reruns (and what reads its output)
    script = tmp_path / "main_script.py"
    script.write_text(SEED_SCRIPT.replace("x ** 2, y", "x ** 3, y"))
    edited = _run(["main_script.py", store, str(csv)], tmp_path)
    assert (edited["ran"], edited["restored"]) == (["step_2", "step_3"], ["step_1"])
    assert edited["why"]["step_2"] == "step_2 reruns: main_script.add_new_features changed"


# -- kill -9 and concurrent runs ------------------------------------------------------------
CRASHY = """
import json, os, sys, time
import numpy as np
import safepoint as sp

def mark(text):
    # read here, not into a module-level constant: a constant the steps read is part
    # of what they depend on, and this one differs between the test's runs
    path = os.environ.get("MARK", "")
    if path:
        with open(path, "a") as f:
            f.write(text + "\\n")


class Crashy(sp.Steps):
    def step_1(self, outputs):
        mark("step_1")
        release = os.environ.get("RELEASE")
        while release and not os.path.exists(release):
            time.sleep(0.02)
        return np.arange(1_000_000, dtype=np.float64)

    def step_2(self, outputs):
        x = outputs["step_1"] * 2
        mark("step_2")
        if os.environ.get("HANG_2"):
            time.sleep(600)
        # big enough that writing it takes a moment: a kill can land mid-write
        return np.tile(x, int(os.environ.get("TILE", "1")))

    def step_3(self, outputs):
        return float(outputs["step_2"].sum())


if __name__ == "__main__":
    wait = {"yes": True, "no": False}[os.environ.get("WAIT", "yes")]
    try:
        report = Crashy(name="crashy", store=sys.argv[1]).run(wait=wait, verbose=True)
    except sp.StepError as exc:
        print(json.dumps({"error": str(exc)}))
    else:
        print(json.dumps({"ran": report.ran, "restored": report.restored}))
"""


def _start(
    tmp_path: Path, store: Path, out: Path | None = None, **env: str
) -> subprocess.Popen[str]:
    script = tmp_path / "crashy.py"
    if not script.exists():
        script.write_text(textwrap.dedent(CRASHY))
    return subprocess.Popen(
        [PY, str(script), str(store)],
        cwd=tmp_path,
        stdout=subprocess.PIPE if out is None else out.open("w"),
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC, **env},
    )


def _wait_for(path: Path, text: str, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        if proc.poll() is not None:
            raise AssertionError(f"process ended early: {proc.communicate()}")
        time.sleep(0.01)
    raise AssertionError(f"{text!r} never appeared in {path}")


def _finish(
    proc: subprocess.Popen[str], timeout: float = 120, out_file: Path | None = None
) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    if out_file is not None:
        out = out_file.read_text()
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


@pytest.mark.slow
def test_kill_9_during_a_step_resumes_at_that_step(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    mark = tmp_path / "mark.txt"
    proc = _start(tmp_path, store_dir, MARK=str(mark), HANG_2="1")
    _wait_for(mark, "step_2", proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    store = sp.Store(store_dir)
    dead = store.runs.list(kind="steps", name="crashy/v1")[0]
    assert dead.status == "running" and dead.progress is not None and dead.progress < 1
    mod = _import_crashy(tmp_path)
    wf = mod.Crashy(name="crashy", store=store)
    status = wf.status()
    assert [s.state for s in status] == ["cached", "missing", "missing"], str(status)
    assert status.last_run is not None and status.last_run["alive"] is False
    assert "died while running" in str(status)

    resumed = _finish(_start(tmp_path, store_dir))
    assert resumed == {"ran": ["step_2", "step_3"], "restored": ["step_1"]}
    runs = store.runs.list(kind="steps", name="crashy/v1")
    assert [r.status for r in runs] == ["succeeded", "interrupted"]
    assert "died" in runs[1].message
    assert wf.load_outputs()["step_3"] == float(np.arange(1_000_000).sum() * 2)


def _import_crashy(tmp_path: Path) -> Any:
    import importlib.util

    # under the script's own name: a script run as __main__ is named after its file, so
    # its helpers are the same code seen from either side
    spec = importlib.util.spec_from_file_location("crashy", tmp_path / "crashy.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("delay", [0.0, 0.1])
@pytest.mark.slow
def test_kill_9_while_an_output_is_written_never_uses_half_of_it(
    tmp_path: Path, delay: float
) -> None:
    store_dir = tmp_path / "store"
    mark = tmp_path / "mark.txt"
    # step_2 returns 64 MB: the kill lands before, during or after its write
    proc = _start(tmp_path, store_dir, MARK=str(mark), TILE="8")
    _wait_for(mark, "step_2", proc)
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)

    store = sp.Store(store_dir)
    expected = np.tile(np.arange(1_000_000, dtype=np.float64) * 2, 8)
    saved = store.versions("crashy/v1/step_2") if "crashy/v1/step_2" in store.models() else []
    for mv in saved:  # whatever is visible is complete and verified
        assert np.array_equal(store.get(mv.name, mv.version), expected)
    resumed = _finish(_start(tmp_path, store_dir, TILE="8"))
    assert resumed["restored"][0] == "step_1"
    if resumed["ran"]:
        assert resumed["ran"][-1] == "step_3"
    else:  # the kill came after the last step had finished: nothing is left to run
        assert resumed["restored"] == ["step_1", "step_2", "step_3"], resumed
    assert ("step_2" in resumed["ran"]) == (not saved)
    mod = _import_crashy(tmp_path)
    outputs = mod.Crashy(name="crashy", store=store).load_outputs()
    assert np.array_equal(outputs["step_2"], expected)
    assert outputs["step_3"] == float(expected.sum())


@pytest.mark.slow
def test_two_runs_at_once_one_waits_and_restores(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    sp.Store(store_dir)  # create the catalog before two processes race to
    mark, release, b_out = tmp_path / "mark.txt", tmp_path / "release", tmp_path / "b.out"
    # a holds the workflow (in step_1) until the test releases it
    a = _start(tmp_path, store_dir, MARK=str(mark), RELEASE=str(release))
    _wait_for(mark, "step_1", a)
    b = _start(tmp_path, store_dir, out=b_out, MARK=str(mark))
    c = _start(tmp_path, store_dir, WAIT="no")
    rc = _finish(c)
    assert "is being run by run" in rc["error"] and "pid" in rc["error"]
    _wait_for(b_out, "waiting for run", b)  # b really started while a held the workflow
    release.touch()
    ra, rb = _finish(a), _finish(b, out_file=b_out)
    assert ra == {"ran": ["step_1", "step_2", "step_3"], "restored": []}
    assert rb == {"ran": [], "restored": ["step_1", "step_2", "step_3"]}
    store = sp.Store(store_dir)
    for step in ("step_1", "step_2", "step_3"):
        assert len(store.versions(f"crashy/v1/{step}")) == 1
    assert mark.read_text().count("step_1") == 1


# -- CLI ------------------------------------------------------------------------------------
class _Result:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def _cli(*args: str) -> _Result:
    """The real command group, in-process (the workflow run before it is a real process)."""
    from click.testing import CliRunner

    from safepoint.cli.main import _register_commands, cli

    _register_commands()
    res = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return _Result(res.exit_code, res.stdout, res.stderr)


@pytest.mark.slow
def test_cli_steps_status_and_outputs(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    _finish(_start(tmp_path, store_dir))
    out = _cli("steps", "status", "crashy", "--store", str(store_dir), "--json")
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert [s["step"] for s in status["steps"]] == ["step_1", "step_2", "step_3"]
    assert [s["state"] for s in status["steps"]] == ["cached"] * 3
    assert status["last_run"]["status"] == "succeeded"
    assert status["code_checked"] is False
    # without the code, a restored step is not said to have unchanged code
    for step in status["steps"]:
        assert step["explanation"].endswith("; code and parameters not compared")
        assert "code, parameters" not in step["explanation"]

    text = _cli("steps", "status", "crashy", "--store", str(store_dir))
    assert text.returncode == 0 and "step_3" in text.stdout and "cached" in text.stdout

    out = _cli("steps", "outputs", "crashy", "--store", str(store_dir), "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["step"] for r in rows] == ["step_1", "step_2", "step_3"]
    store = sp.Store(store_dir)
    for r in rows:
        mv = store.info(f"crashy/v1/{r['step']}")
        assert (r["digest"], r["size"], r["version"]) == (mv.digest, mv.size, mv.version)
    assert rows[0]["type"] == "numpy.ndarray" and rows[2]["type"] == "float"

    # the workflow's code, given as module:Class, lets status compare code too
    full = _cli(
        "steps", "status", "crashy", "--store", str(store_dir), "--json",
        "--workflow", f"{tmp_path / 'crashy.py'}:Crashy",
    )  # fmt: skip
    assert full.returncode == 0, full.stderr
    assert json.loads(full.stdout)["code_checked"] is True

    missing = _cli("steps", "status", "nothing-here", "--store", str(store_dir))
    assert missing.returncode != 0 and "no saved outputs" in missing.stderr
    nowhere = tmp_path / "no-store-here"
    absent = _cli("steps", "outputs", "crashy", "--store", str(nowhere))
    assert absent.returncode != 0 and absent.stderr.startswith("safepoint: error:")
    assert not nowhere.exists()  # reading never creates a store


@pytest.mark.slow
def test_cli_steps_export(tmp_path: Path, new_file_mode: int) -> None:
    store_dir = tmp_path / "store"
    _finish(_start(tmp_path, store_dir))
    expected = _import_crashy(tmp_path).Crashy(name="crashy", store=sp.Store(store_dir))
    outputs = expected.load_outputs()

    folder = tmp_path / "exported"
    out = _cli("steps", "export", "crashy", str(folder), "--store", str(store_dir), "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["step"] for r in rows] == ["step_1", "step_2", "step_3"]
    assert sorted(p.name for p in folder.iterdir()) == ["step_1.sp", "step_2.sp", "step_3.sp"]
    for r in rows:  # plain safepoint files: they load without the store
        loaded = sp.load(r["path"])
        assert np.array_equal(loaded, outputs[r["step"]])
        assert sp.inspect(r["path"]).digest == r["digest"]
    assert out.stderr == ""  # no pickle, no warning

    # an existing file is not replaced without --force, and nothing is written
    before = (folder / "step_1.sp").stat().st_mtime_ns
    again = _cli("steps", "export", "crashy", str(folder), "--store", str(store_dir))
    assert again.returncode == 2 and "--force" in again.stderr
    assert (folder / "step_1.sp").stat().st_mtime_ns == before
    forced = _cli("steps", "export", "crashy", str(folder), "--store", str(store_dir), "--force")
    assert forced.returncode == 0 and "step_3.sp" in forced.stdout

    # pickles on request only, with a warning on stderr
    pickled = _cli(
        "steps", "export", "crashy", str(tmp_path / "pkl"), "--store", str(store_dir),
        "--format", "pickle", "--step", "step_3",
    )  # fmt: skip
    assert pickled.returncode == 0, pickled.stderr
    assert "run code when they are loaded" in pickled.stderr
    import pickle

    with open(tmp_path / "pkl" / "step_3.pkl", "rb") as fh:
        assert pickle.load(fh) == outputs["step_3"]  # the file made above
    unknown = _cli(
        "steps", "export", "crashy", str(tmp_path / "x"), "--store", str(store_dir),
        "--step", "step_9",
    )  # fmt: skip
    assert unknown.returncode == 1 and "step_9" in unknown.stderr

    # the Python API: the same files
    with pytest.warns(sp.SafepointWarning, match="run code"):
        rows = expected.export_outputs(tmp_path / "api", format="joblib", steps=["step_3"])
    import joblib

    assert joblib.load(rows[0]["path"]) == outputs["step_3"]

    # each file is written through a fresh, exclusively created temporary file: a symlink
    # planted where a fixed temporary name would be is never followed
    planted = tmp_path / "planted"
    planted.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    for step in ("step_1", "step_2", "step_3"):
        (planted / f".{step}.sp.sp-tmp").symlink_to(victim)
    rows = expected.export_outputs(planted)
    assert victim.read_text() == "keep me"
    names = sorted(p.name for p in planted.iterdir())
    assert names == sorted([*(f".{s}.sp.sp-tmp" for s in ("step_1", "step_2", "step_3")),
                            "step_1.sp", "step_2.sp", "step_3.sp"])  # fmt: skip
    # the mode a new file gets (0666 less the umask), not mkstemp's 0600
    assert all(os.stat(r["path"]).st_mode & 0o777 == new_file_mode for r in rows)
