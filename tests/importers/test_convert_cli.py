"""``safepoint convert`` and ``safepoint scan``: output, JSON and exit codes for CI."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import joblib
import numpy as np
import pytest
from click.testing import CliRunner
from convert_payloads import PAYLOADS

import safepoint as sp
from safepoint.cli.main import _register_commands, cli


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    _register_commands()
    return CliRunner()


@pytest.fixture
def files(tmp: Path) -> dict[str, Path]:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit(np.eye(4), [0, 1, 0, 1])
    out = {
        "good_pkl": tmp / "models" / "good.pkl",
        "good_joblib": tmp / "models" / "good.joblib",
        "evil": tmp / "models" / "sub" / "evil.pkl",
        "broken": tmp / "models" / "broken.pkl",
    }
    out["evil"].parent.mkdir(parents=True)
    out["good_pkl"].write_bytes(pickle.dumps(model, protocol=5))
    joblib.dump(model, out["good_joblib"], compress=3)
    out["evil"].write_bytes(PAYLOADS["getattr_chain"](str(tmp / "canary")))
    out["broken"].write_bytes(pickle.dumps(model, protocol=5)[:100])
    (tmp / "models" / "README.md").write_text("Installation: none\n")
    return out


def test_scan_all_safe(runner: CliRunner, files: dict[str, Path]) -> None:
    args = ["scan", str(files["good_pkl"]), str(files["good_joblib"])]
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    # nothing needs attention: the summary line, and what no scan checks, once
    lines = res.output.splitlines()
    assert lines[0] == "scanned 2 file(s): 2 safe, 0 need untrusted types, 0 refused"
    assert all(line.startswith("not checked: ") for line in lines[1:])
    assert "good.pkl" not in res.output
    res = runner.invoke(cli, [*args, "-v"])  # every file and every type
    assert "SAFE" in res.output and "joblib+zlib" in res.output
    assert "sklearn.linear_model._logistic.LogisticRegression" in res.output


def test_scan_folder_json(runner: CliRunner, files: dict[str, Path], tmp: Path) -> None:
    res = runner.invoke(cli, ["scan", str(tmp / "models"), "--json"])
    assert res.exit_code == 1
    data = {Path(r["path"]).name: r for r in json.loads(res.output)}
    # README.md is not a model file and is skipped inside folders
    assert sorted(data) == ["broken.pkl", "evil.pkl", "good.joblib", "good.pkl"]
    assert data["good.pkl"]["verdict"] == "safe"
    assert data["evil.pkl"]["verdict"] == "refused"
    assert "builtins.getattr" in data["evil.pkl"]["untrusted"]
    assert data["broken.pkl"]["verdict"] == "refused"
    assert "truncated" in data["broken.pkl"]["problems"][0]
    assert not (tmp / "canary").exists()


def test_scan_with_trust(runner: CliRunner, tmp: Path) -> None:
    src = tmp / "od.pkl"
    src.write_bytes(pickle.dumps({"x": np.float64}, protocol=2))
    assert runner.invoke(cli, ["scan", str(src)]).exit_code == 0
    src.write_bytes(b"\x80\x02cmypkg.models\nThing\n)\x81}b.")
    assert runner.invoke(cli, ["scan", str(src)]).exit_code == 1
    assert runner.invoke(cli, ["scan", str(src), "--trust", "mypkg.models.Thing"]).exit_code == 0


def test_convert_ok(runner: CliRunner, files: dict[str, Path], tmp: Path) -> None:
    dst = tmp / "good.sp"
    res = runner.invoke(cli, ["convert", str(files["good_joblib"]), str(dst), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["verdict"] == "converted" and report["format"] == "joblib+zlib"
    np.testing.assert_array_equal(sp.load(dst).predict(np.eye(4)), [0, 1, 0, 1])
    res = runner.invoke(cli, ["convert", str(files["good_pkl"]), str(tmp / "g2.sp")])
    assert res.exit_code == 0 and "converted" in res.output


def test_convert_refused(runner: CliRunner, files: dict[str, Path], tmp: Path) -> None:
    dst = tmp / "evil.sp"
    res = runner.invoke(cli, ["convert", str(files["evil"]), str(dst), "--json"])
    assert res.exit_code == 1
    report = json.loads(res.output)
    assert report["verdict"] == "refused" and "getattr" in report["error"]
    src = tmp / "sys.pkl"
    src.write_bytes(PAYLOADS["os_system_p0"](str(tmp / "canary")))
    res = runner.invoke(cli, ["convert", str(src), str(dst)])
    assert res.exit_code == 1
    # no advice to trust os.system: the message says what the file is
    assert "os.system" in res.output and "malicious" in res.output
    assert "--trust" not in res.output
    res = runner.invoke(cli, ["convert", str(src), str(dst), "--json"])
    assert json.loads(res.output)["untrusted"] == ["os.system"]
    assert not dst.exists() and not (tmp / "canary").exists()
    src.write_bytes(b"\x80\x02cmypkg.models\nThing\n)\x81}b.")
    res = runner.invoke(cli, ["convert", str(src), str(dst)])
    assert res.exit_code == 1
    assert "pass them: --trust mypkg.models.Thing." in res.output  # the flag to pass, spelt out


def test_missing_file(runner: CliRunner, tmp: Path) -> None:
    res = runner.invoke(cli, ["scan", str(tmp / "nope.pkl")])
    assert res.exit_code == 1 and "no such file" in res.output
