"""The fuzzing harnesses keep working, and what the campaign found stays fixed.

* Each atheris harness (``fuzz_*.py``, see ``tools/fuzz_campaign.py``) runs for a
  hundred executions as a subprocess, on the seeds of ``fuzz_seeds.py``:
  it must exit 0 having executed inputs, with no finding. Skipped, with the reason,
  where atheris is not importable (it is in the ``test`` extra for Python < 3.13).
* The sentinel of ``fuzz_common.py`` sees what the load guard lets through, and
  only that (a subprocess: audit hooks cannot be removed).
* Every reproducer of ``fuzz-regressions/`` (a finding of the campaign, minimised)
  is refused with a ``SafepointError`` by the entry point that crashed on it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

import safepoint as sp

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
REGRESSIONS = HERE / "fuzz-regressions"

try:
    import atheris  # noqa: F401

    HAVE_ATHERIS = True
except ImportError:  # no wheel for this platform/Python (atheris has none for 3.13 yet)
    HAVE_ATHERIS = False

needs_atheris = pytest.mark.skipif(
    not HAVE_ATHERIS, reason="atheris is not importable (pip install -e '.[test]' on Python<3.13)"
)

#: (script, SP_FUZZ_MODE, seed kind of fuzz_seeds.py)
HARNESSES = [
    ("fuzz_reader.py", "file", "reader"),
    ("fuzz_reader.py", "manifest", "manifest"),
    ("fuzz_pickle.py", "pickle", "pickle"),
    ("fuzz_importer.py", "joblib", "joblib"),
    ("fuzz_importer.py", "skops", "skops"),
    ("fuzz_importer.py", "skops-schema", "skops-schema"),
]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    src = str(ROOT / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


@needs_atheris
@pytest.mark.timeout(600)
@pytest.mark.parametrize(("script", "mode", "kind"), HARNESSES, ids=[h[1] for h in HARNESSES])
def test_harness_runs(tmp_path: Path, script: str, mode: str, kind: str) -> None:
    if kind.startswith("skops"):
        pytest.importorskip("skops")
    sys.path.insert(0, str(HERE))
    try:
        import fuzz_seeds
    finally:
        sys.path.remove(str(HERE))
    seeds = tmp_path / "seeds"
    assert fuzz_seeds.make_seeds(kind, str(seeds)) > 0
    proc = subprocess.run(
        [
            sys.executable,
            str(HERE / script),
            str(seeds),
            "-runs=100",
            "-timeout=60",
            "-rss_limit_mb=4096",
            f"-artifact_prefix={tmp_path}{os.sep}",
        ],
        env=_env(SP_FUZZ_MODE=mode, SP_FUZZ_WORKDIR=str(tmp_path / "work")),
        capture_output=True,
        text=True,
        timeout=540,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    done = re.findall(r"Done (\d+) runs in", out)
    assert done and int(done[-1]) > 0, out[-4000:]
    # safepoint is instrumented: libFuzzer sees its code's edges
    cov = re.findall(r"cov: (\d+)", out)
    assert cov and int(cov[-1]) > 50, out[-4000:]
    assert "seed finding" not in out and "Uncaught Python exception" not in out, out[-4000:]


_SENTINEL = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, {here!r})
    import fuzz_common
    from safepoint.errors import LoadGuardError
    from safepoint.format import guard

    guard._install()
    s = fuzz_common._Sentinel({tmp!r})
    sys.addaudithook(s.hook)
    s.active = True
    # the guard refuses first: the sentinel never sees the event
    try:
        with guard.guarded("a test"):
            os.system("true")
    except LoadGuardError:  # where it happens, and again when the guard closes
        print("guard refused")
    assert not s.seen, s.seen
    # outside a guard, the sentinel is what stops code from running
    try:
        os.system("true")
    except fuzz_common.CodeRan:
        print("sentinel caught")
    s.seen.clear()
    open(os.path.join({tmp!r}, "inside"), "w").close()
    try:
        open({outside!r}, "w")
    except fuzz_common.CodeRan:
        print("write outside caught")
    """
)


def test_sentinel_sees_what_the_guard_lets_through(tmp_path: Path) -> None:
    code = _SENTINEL.format(
        here=str(HERE), tmp=str(tmp_path / "work"), outside=str(tmp_path / "outside")
    )
    (tmp_path / "work").mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split() == [
        "guard",
        "refused",
        "sentinel",
        "caught",
        "write",
        "outside",
        "caught",
    ]
    assert not (tmp_path / "outside").exists()


# -- the campaign's findings -------------------------------------------------------
def _regressions() -> list[Path]:
    return sorted(p for p in REGRESSIONS.iterdir() if not p.name.endswith(".md"))


def _replay(path: Path, tmp: Path) -> None:
    """The entry points of the harness that found ``path`` (named by its suffix):
    each returns or raises a SafepointError, nothing else."""
    data = path.read_bytes()
    if path.suffix == ".sp":
        for key in (None, b"k" * 32):
            for call in (sp.loads, sp.inspect, sp.verify):
                try:
                    call(data, key=key)
                except sp.SafepointError:
                    pass
        return
    src = tmp / ("input" + path.suffix)
    src.write_bytes(data)
    (result,) = sp.scan(src)  # scan reports (never raises) a file it refuses
    assert result.verdict == "refused", result
    with pytest.raises(sp.SafepointError):
        sp.convert(src, tmp / "out.sp")


@pytest.mark.parametrize("path", _regressions(), ids=lambda p: p.name)
def test_fuzz_regression_is_refused(path: Path, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _replay(path, tmp_path)
