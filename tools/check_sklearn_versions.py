"""Run the resumable-search tests against several scikit-learn releases and print a table.

    python tools/check_sklearn_versions.py                      # 1.4 (oldest) .. newest
    python tools/check_sklearn_versions.py --versions 1.4 1.9   # just these
    python tools/check_sklearn_versions.py --slow               # the slow tests too

The searches follow scikit-learn's private fit loop (every private name they use is
in ``src/safepoint/workflows/search/_sklearn_compat.py``), so each scikit-learn
release can break them. For each version this makes (once) a virtual environment
``<venv-dir>/safepoint-skl-<version>`` with that scikit-learn and safepoint's core
dependencies, and runs ``tests/workflows/test_search*.py`` there with
``PYTHONPATH=src`` (safepoint itself is not installed into it). The oldest version
in the list also gets every other core dependency at its lower bound from
pyproject.toml (``numpy>=1.26`` -> ``numpy==1.26.*``), the oldest combination a
user can install.

The virtual environments live outside the repository (default ``/tmp``) and are
reused by later runs; ``--fresh`` rebuilds them.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: one release of every scikit-learn minor version safepoint supports (pyproject's lower
#: bound first)
DEFAULT_VERSIONS = ["1.4", "1.5", "1.6", "1.7", "1.8", "1.9"]
TEST_TOOLS = ["pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100", "psutil>=5.9"]


def core_dependencies() -> list[str]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        deps: list[str] = tomllib.load(f)["project"]["dependencies"]
    return [d for d in deps if not d.lower().startswith("scikit-learn")]


def lower_bound_pin(spec: str) -> str:
    """``numpy>=1.26`` -> ``numpy==1.26.*``: the oldest release the project allows."""
    m = re.fullmatch(r"([A-Za-z0-9_.\-\[\]]+)>=([0-9][0-9.]*)", spec.replace(" ", ""))
    return f"{m.group(1)}=={m.group(2)}.*" if m else spec


def ensure_venv(version: str, venv_dir: Path, oldest: bool, fresh: bool) -> Path:
    venv = venv_dir / f"safepoint-skl-{version}{'-oldest' if oldest else ''}"
    python = venv / "bin" / "python"
    if fresh and venv.exists():
        shutil.rmtree(venv)
    if python.exists():
        return python
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    deps = core_dependencies()
    if oldest:
        deps = [lower_bound_pin(d) for d in deps]
    cmd = [str(python), "-m", "pip", "install", "-q", f"scikit-learn=={version}.*"]
    subprocess.run(cmd + deps + TEST_TOOLS, check=True)
    return python


def installed(python: Path, module: str) -> str:
    out = subprocess.run(
        [str(python), "-c", f"import {module}; print({module}.__version__)"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() or "?"


def run_tests(python: Path, slow: bool, extra: list[str]) -> tuple[dict[str, int], float, str]:
    tests = sorted(str(p) for p in (ROOT / "tests" / "workflows").glob("test_search*.py"))
    cmd = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests, *extra]
    if not slow:
        cmd += ["-m", "not slow"]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    start = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    elapsed = time.monotonic() - start
    summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-500:]
    counts = {
        k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors)", summary)
    }
    return counts, elapsed, out.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--versions", nargs="+", default=DEFAULT_VERSIONS)
    ap.add_argument("--venv-dir", type=Path, default=Path("/tmp"))
    ap.add_argument("--slow", action="store_true", help="run the slow tests too")
    ap.add_argument("--fresh", action="store_true", help="rebuild the virtual environments")
    ap.add_argument("--show-failures", action="store_true", help="print pytest's output on failure")
    ap.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = ap.parse_args()

    rows = []
    failed = False
    for i, version in enumerate(args.versions):
        python = ensure_venv(version, args.venv_dir, oldest=i == 0, fresh=args.fresh)
        counts, elapsed, output = run_tests(python, args.slow, args.pytest_args)
        bad = counts.get("failed", 0) + counts.get("error", 0) + counts.get("errors", 0)
        failed |= bool(bad) or not counts.get("passed")
        rows.append(
            (
                installed(python, "sklearn"),
                installed(python, "numpy"),
                installed(python, "scipy"),
                installed(python, "pandas"),
                str(counts.get("passed", 0)),
                str(bad),
                str(counts.get("skipped", 0)),
                f"{elapsed:.0f}",
            )
        )
        if bad and args.show_failures:
            print(output)
        print(f"scikit-learn {rows[-1][0]}: {rows[-1][4]} passed, {bad} failed", flush=True)

    header = ("scikit-learn", "numpy", "scipy", "pandas", "passed", "failed", "skipped", "s")
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    print()
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
