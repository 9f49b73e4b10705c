"""What every command does with its output, progress and errors: real subprocesses
where pipes and terminals matter (a pseudo-terminal for stderr where progress must
show), click's CliRunner (stdout and stderr apart) for the rest."""

from __future__ import annotations

import json
import os
import pickle
import pty
import select
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression

import safepoint as sp
from safepoint.cli.main import _register_commands
from safepoint.cli.main import cli as group

_register_commands()

CLI = [sys.executable, "-m", "safepoint.cli"]
FEATURES = ["a", "b", "c"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEPOINT_")}
    return {**env, **extra}


def cli(*args: str, cwd: Path, code: int | None = 0, **kw: Any) -> subprocess.CompletedProcess:
    r = subprocess.run(
        [*CLI, *args],
        cwd=cwd,
        env=kw.pop("env", None) or _env(),
        capture_output=True,
        text=True,
        timeout=kw.pop("timeout", 180),
        **kw,
    )
    if code is not None:
        assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    return r


def run(*args: str, cwd: Path, code: int = 0) -> Any:
    """In-process: ``result.stdout`` and ``result.stderr`` apart."""
    old = os.getcwd()
    os.chdir(cwd)
    try:
        res = CliRunner().invoke(group, list(args), env={"SAFEPOINT_STORE": None})
    finally:
        os.chdir(old)
    assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr, res.exception)
    return res


def with_tty_stderr(*args: str, cwd: Path) -> tuple[int, str, str]:
    """Run with stdout a pipe and stderr a pseudo-terminal (as in `cmd | jq` in a shell)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*CLI, *args], cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=slave
    )
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        if not ready:
            proc.kill()
            raise AssertionError("no output for 120 s")
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    out = proc.stdout.read().decode() if proc.stdout else ""
    proc.wait(timeout=60)
    os.close(master)
    return proc.returncode, out, b"".join(chunks).decode(errors="replace")


@pytest.fixture(scope="module")
def root(tmp_path_factory: Any) -> Path:
    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.random((200, 3)), columns=FEATURES)
    y = (X.a > 0.5).astype(int)
    store = sp.Store(root / ".safepoint")
    store.put("demo/clf", LogisticRegression().fit(X, y), alias="production")
    X.assign(id=np.arange(len(X)))[["id", *FEATURES]].to_parquet(root / "features.parquet")
    sp.dump({"w": np.arange(3)}, root / "w.sp")
    return root


# -- progress and --json --------------------------------------------------------------------
@pytest.mark.slow
def test_score_json_is_clean_json_on_stdout_in_a_pipe(root: Path) -> None:
    piped = subprocess.run(
        f"{sys.executable} -m safepoint.cli score -m demo/clf@production -i features.parquet "
        f"-o p2.jsonl --json | {sys.executable} -m json.tool",
        shell=True,
        cwd=root,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["written"] == 200
    assert piped.stderr == ""  # no progress in a pipe


@pytest.mark.slow
def test_progress_goes_to_a_terminal_stderr_only_and_never_with_json_or_quiet(root: Path) -> None:
    code, out, err = with_tty_stderr(
        "score",
        "-m",
        "demo/clf@production",
        "-i",
        "features.parquet",
        "-o",
        "p3.jsonl",
        cwd=root,
    )
    assert code == 0, err
    assert "scoring" in err and "records" in err  # the progress bar, on the terminal
    assert out.startswith("read 200, wrote 200") and "scoring" not in out
    code, out, err = with_tty_stderr(
        "score",
        "-m",
        "demo/clf@production",
        "-i",
        "features.parquet",
        "-o",
        "p4.jsonl",
        "--json",
        cwd=root,
    )
    assert code == 0 and json.loads(out)["written"] == 200
    assert "scoring" not in err
    code, out, err = with_tty_stderr(
        "score",
        "-m",
        "demo/clf@production",
        "-i",
        "features.parquet",
        "-o",
        "p5.jsonl",
        "-q",
        cwd=root,
    )
    assert code == 0 and out == "" and "scoring" not in err


@pytest.mark.slow
def test_score_method_predict_proba_gives_a_column_per_class(root: Path) -> None:
    cli(
        "score",
        "-m",
        "demo/clf@production",
        "-i",
        "features.parquet",
        "-o",
        "proba.parquet",
        "--method",
        "predict_proba",
        "-q",
        cwd=root,
    )
    out = pd.read_parquet(root / "proba.parquet")
    assert {"id", "proba_0", "proba_1"} <= set(out.columns)
    np.testing.assert_allclose(out.proba_0 + out.proba_1, 1.0)
    r = cli(
        "score",
        "-m",
        "demo/clf@production",
        "-i",
        "features.parquet",
        "-o",
        "x.parquet",
        "--method",
        "fit",
        cwd=root,
        code=2,
    )
    assert "'fit' is not one of" in r.stderr


# -- errors ------------------------------------------------------------------------------
def test_errors_are_json_on_stderr_with_json(root: Path) -> None:
    r = run("show", "demo/nope", "--json", cwd=root, code=1)
    assert r.stdout == ""
    err = json.loads(r.stderr)
    assert err["type"] == "NotFoundError" and "demo/nope" in err["error"]
    assert err["exit_code"] == 1
    r = run("runs", "--status", "bogus", "--json", cwd=root, code=2)
    err = json.loads(r.stderr)
    assert err["type"] == "BadParameter" and "bogus" in err["error"]
    r = run("show", "demo/nope", cwd=root, code=1)  # without --json: one line
    assert r.stderr.startswith("safepoint: error: ") and r.stderr.count("\n") == 1


def test_get_into_a_missing_folder_is_a_usage_error_not_a_traceback(root: Path) -> None:
    r = cli("get", "demo/clf", "/missing/dir/m.sp", cwd=root, code=2)
    assert "Traceback" not in r.stderr
    assert "the folder /missing/dir does not exist" in r.stderr
    r = cli("get", "demo/clf", "/missing/dir/m.sp", "--json", cwd=root, code=2)
    assert "does not exist" in json.loads(r.stderr)["error"]


def test_an_os_error_is_one_line_not_a_traceback(root: Path) -> None:
    # an OSError the command does not expect: a message, not a traceback
    r = run("verify", "w.sp", "--key", "file:/no/such/key", cwd=root, code=1)
    assert r.stderr == (
        "safepoint: error: No such file or directory: /no/such/key "
        "(the folder /no/such does not exist)\n"
    )


def test_errors_name_cli_options_not_python_arguments(root: Path, tmp_path: Path) -> None:
    store = sp.Store(tmp_path / "s")
    store.put("m/x", {"w": np.arange(2)}, alias="prod")
    store.put("m/x", {"w": np.arange(3)})
    args = ("--store", str(tmp_path / "s"))
    r = run("alias", "m/x", "prod", "2", *args, cwd=tmp_path, code=1)
    assert "--expected 1" in r.stderr and "expected=" not in r.stderr
    r = run("alias", "m/x", "prod", "2", "--expected", "2", *args, cwd=tmp_path, code=1)
    assert "moved since you read it" in r.stderr and "expected=" not in r.stderr
    r = run("rm", "m/x@1", *args, cwd=tmp_path, code=1)
    assert "--force" in r.stderr and "force=True" not in r.stderr
    # an untrusted type: the --trust flags to pass, not sp.load(...)
    (tmp_path / "od.pkl").write_bytes(b"\x80\x02cmypkg.models\nThing\n)\x81}b.")
    r = run("convert", "od.pkl", "od.sp", cwd=tmp_path, code=1)
    assert "--trust mypkg.models.Thing" in r.stderr and "sp.load(" not in r.stderr


def test_unknown_filter_values_are_usage_errors(root: Path) -> None:
    assert "'nope' is not one of" in run("log", "--action", "nope", cwd=root, code=2).stderr
    assert "bogus" in run("runs", "--status", "bogus", cwd=root, code=2).stderr
    assert "not a kind of run" in run("runs", "--kind", "bogus", cwd=root, code=2).stderr
    run("log", "--action", "put", cwd=root)
    run("runs", "--status", "succeeded", "--kind", "scoring", cwd=root)
    # a kind of the user's own is accepted once the store has such runs
    sp.Store(root / ".safepoint").runs.start("train", "mine").finish()
    r = run("runs", "--kind", "train", "--json", cwd=root)
    assert [x["name"] for x in json.loads(r.stdout)] == ["mine"]


def test_cli_constants_match_the_library() -> None:
    from safepoint.cli import scoring_cmds, store_cmds
    from safepoint.stores.runs import STATUSES
    from safepoint.stores.store import AUDIT_ACTIONS
    from safepoint.workflows.scoring.model import METHODS

    assert store_cmds.STATUSES == STATUSES
    assert store_cmds.AUDIT_ACTIONS == AUDIT_ACTIONS
    assert scoring_cmds.METHODS == METHODS


# -- convert and scan ----------------------------------------------------------------------
def test_convert_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    (tmp_path / "d.pkl").write_bytes(pickle.dumps({"a": np.arange(3)}))
    (tmp_path / "out.sp").write_bytes(b"precious")
    r = run("convert", "d.pkl", "out.sp", cwd=tmp_path, code=2)
    assert "--force" in r.stderr
    assert (tmp_path / "out.sp").read_bytes() == b"precious"
    run("convert", "d.pkl", "out.sp", "--force", cwd=tmp_path)
    np.testing.assert_array_equal(sp.load(tmp_path / "out.sp")["a"], np.arange(3))


def test_scan_prints_a_summary_and_only_what_needs_attention(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"ok{i}.pkl").write_bytes(pickle.dumps({"a": np.arange(i + 1)}))
    (tmp_path / "bad.pkl").write_bytes(b"\x80\x02cmypkg.models\nThing\n)\x81}b.")
    r = run("scan", ".", cwd=tmp_path, code=1)
    lines = r.stdout.splitlines()
    assert lines[0] == "scanned 4 file(s): 3 safe, 1 need untrusted types, 0 refused"
    assert "ok0.pkl" not in r.stdout and "bad.pkl" in r.stdout
    assert "mypkg.models.Thing" in r.stdout and "builtins.dict" not in r.stdout
    verbose = run("scan", ".", "-v", cwd=tmp_path, code=1).stdout
    assert all(f"ok{i}.pkl" in verbose for i in range(3))


# -- --trust with --path -----------------------------------------------------------------------
@pytest.mark.slow
def test_trust_needs_the_module_importable_and_path_adds_a_folder(tmp_path: Path) -> None:
    code = tmp_path / "code" / "mypkg"
    code.mkdir(parents=True)
    (code / "__init__.py").write_text("")
    (code / "models.py").write_text(
        textwrap.dedent(
            """
            class Thing:
                def __init__(self, w=1.0):
                    self.w = w
            """
        )
    )
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import pickle, sys; sys.path.insert(0, 'code'); from mypkg.models import Thing;"
            "open('thing.pkl', 'wb').write(pickle.dumps(Thing(2.5)))",
        ],
        cwd=tmp_path,
        check=True,
        timeout=60,
    )
    r = cli(
        "convert", "thing.pkl", "thing.sp", "--trust", "mypkg.models.Thing", cwd=tmp_path, code=1
    )
    assert "cannot be imported" in r.stderr and "--path DIR" in r.stderr
    cli(
        "convert",
        "thing.pkl",
        "thing.sp",
        "--trust",
        "mypkg.models.Thing",
        "--path",
        "code",
        cwd=tmp_path,
    )
    r = cli(
        "inspect",
        "thing.sp",
        "--trust",
        "mypkg.models.Thing",
        "--path",
        "code",
        "--json",
        cwd=tmp_path,
    )
    assert json.loads(r.stdout)["root_type"] == "mypkg.models.Thing"
    assert "no such folder" not in r.stderr
    r = cli("convert", "thing.pkl", "t2.sp", "--path", "nowhere", cwd=tmp_path, code=2)
    assert "nowhere" in r.stderr


# -- serve, ui and demo: --json and missing extras -------------------------------------------------
@pytest.mark.parametrize(
    ("command", "module", "extra"),
    [("ui", "uvicorn", "ui"), ("ui", "plotly", "ui"), ("serve", "pydantic", "serve")],
)
def test_missing_extra_names_the_extra(root: Path, command: str, module: str, extra: str) -> None:
    # sys.modules[name] = None is how Python spells "not installed" for an import
    code = (
        f"import sys; sys.modules[{module!r}] = None\n"
        "from safepoint.cli import main\n"
        f"main([{command!r}, '--model', 'demo/clf'] if {command!r} == 'serve' else [{command!r}])"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "ModuleNotFoundError" not in r.stderr
    assert f"pip install 'safepoint[{extra}]'" in r.stderr and module in r.stderr


def test_every_command_has_json(root: Path) -> None:
    """The README says every command has --json: each command's --help lists it."""
    missing = []

    def walk(cmd: Any, path: str) -> None:
        import click

        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(sub, f"{path} {name}".strip())
            return
        if not any(getattr(p, "name", "") == "as_json" for p in cmd.params):
            missing.append(path)

    walk(group, "")
    assert missing == []


@pytest.mark.slow
def test_demo_json_reports_each_part_and_speaks_of_the_product(tmp_path: Path) -> None:
    r = cli("demo", "--dir", "d", "--json", cwd=tmp_path, timeout=900)
    report = json.loads(r.stdout)
    assert report["ok"] is True and report["dir"] == str(tmp_path / "d")
    titles = [p["part"] for p in report["parts"]]
    assert [t.split(":")[0] for t in titles] == ["format", "store", "steps", "search", "scoring"]
    text = json.dumps(report).lower()
    assert "seed" not in text and "issue" not in text
    search = next(p for p in report["parts"] if p["part"].startswith("search"))
    assert any("linked to the search run" in line for line in search["lines"])


def test_get_of_a_damaged_blob_fails_and_leaves_no_file(tmp_path: Path) -> None:
    """The copy is checked (digest and every buffer) before it takes OUT's name."""
    store = sp.Store(tmp_path / ".safepoint")
    mv = store.put("demo/arr", {"w": np.arange(4096, dtype=np.float64)})
    blob = store.blobs.local_path(mv.digest)
    assert blob is not None
    os.chmod(blob, 0o644)
    with open(blob, "r+b") as f:
        f.seek(100)  # inside the array's buffer, past the 64-byte header
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    r = run("get", "demo/arr", "out.sp", cwd=tmp_path, code=1)
    assert f"the blob of {mv.ref} is damaged" in r.stderr and "checksum" in r.stderr
    assert not (tmp_path / "out.sp").exists()
    assert not list(tmp_path.glob(".out.sp.*"))


def test_get_writes_a_file_with_the_mode_of_a_new_file(tmp_path: Path, new_file_mode: int) -> None:
    """OUT gets 0666 less the umask, as any new file, not the temporary file's 0600."""
    store = sp.Store(tmp_path / ".safepoint")
    mv = store.put("demo/arr", {"w": np.arange(64, dtype=np.float64)})
    r = run("get", "demo/arr", "out.sp", "--json", cwd=tmp_path)
    assert json.loads(r.stdout)["digest"] == mv.digest
    out = tmp_path / "out.sp"
    assert out.stat().st_mode & 0o777 == new_file_mode
    np.testing.assert_array_equal(sp.load(out)["w"], np.arange(64, dtype=np.float64))
    assert not list(tmp_path.glob(".out.sp.*"))


def test_get_into_a_pipe_or_folder_is_a_usage_error(tmp_path: Path) -> None:
    """OUT is renamed into place after the copy is checked: a pipe, device or folder
    there would be replaced, so it is refused first, even with --force."""
    import stat

    store = sp.Store(tmp_path / ".safepoint")
    store.put("demo/arr", {"w": np.arange(8)})
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "dir").mkdir()
    # a folder is refused by the argument's type already, a pipe by the write
    for out, said in (("pipe", "is a named pipe, not a file"), ("dir", "is a directory")):
        r = run("get", "demo/arr", out, "--force", cwd=tmp_path, code=2)
        assert said in r.stderr and "Traceback" not in r.stderr
    assert stat.S_ISFIFO(os.stat(tmp_path / "pipe").st_mode)
    assert (tmp_path / "dir").is_dir() and not list((tmp_path / "dir").iterdir())
