"""Run the benchmark: ``python -m bench.run --scale 1`` (the tables in docs/benchmarks.md).

Every measurement runs in a fresh ``python -m bench.worker`` process, so that
no library profits from another's warm caches or imports; files are read from
the page cache (each is read once before its loads are timed).

Two modes. The default, *cold*, is what a user meets: a training script saves
its model once, in a process that has just built it; a server loads once. A
save's worker unpickles the object just before (fresh memory), nothing is
prefaulted, and each worker waits ``--settle`` seconds before the timed
operation so that memory the previous worker freed has been handed back to the
host by this VM (free page reporting) for every library alike, as it has been
for a script that built its model long after. ``--prefault`` instead touches
and frees about twice the operation's data in fresh memory just before it
(``bench.worker.prefault``), which keeps the hypervisor's faults out and
compares the libraries alone: the second table. Repeats are interleaved across
libraries so that a slow minute of a shared machine does not hit one library
only; each cell reports the median of ``--repeat`` runs (7 by default) and the
results keep min and max, with the kernel's counts (system time, page faults).

Examples::

    python -m bench.run --scale 1 --models M1,M2,M5,M6 --libs pickle,safepoint   # cold
    python -m bench.run --scale 1 --prefault          # all models, prefaulted
    python -m bench.run --scale 0.1                   # all models, small
    python -m bench.report bench/results/results-s1.json   # the tables again
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .libs import LIBS
from .models import DEFAULT_CACHE, MODELS, ensure
from .report import render

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
#: libraries whose durable save (fsync before returning) is compared
DURABLE_LIBS = ("pickle", "safepoint")
COMPRESSED_LIBS = ("joblib-z3", "safepoint-zstd")
INSPECT_LIBS = ("safepoint", "skops")
_WRITES = (
    "save",
    "save_durable",
    "raw_write",
    "raw_write_new",
    "raw_write_chunked",
    "raw_write_fsync",
)
RAW_OPS = ("raw_read", "raw_write", "raw_write_new", "raw_write_chunked", "raw_write_fsync")
#: seconds a cold worker waits before its timed operation (the guest reports freed
#: memory to the host after 2 s: PAGE_REPORTING_DELAY)
SETTLE_S = 3.0


def pythonpath() -> str:
    """Workers import bench/ and the safepoint of this same tree (a checkout or an
    exported snapshot of one), whatever is installed in the environment."""
    parts = [str(ROOT)]
    if (ROOT / "src" / "safepoint").is_dir():
        parts.insert(0, str(ROOT / "src"))
    return os.pathsep.join(parts)


def source_commit() -> str | None:
    """The commit measured: ``git rev-parse HEAD``, or the COMMIT file of a snapshot."""
    marker = ROOT / "COMMIT"
    if marker.exists():
        return marker.read_text().strip()
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "src", "bench"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return out.stdout.strip() + (" (with uncommitted changes)" if dirty else "")


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import importlib.metadata as md

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "commit": source_commit(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            info["memory_gb"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for pkg in (
        "safepoint",
        "numpy",
        "scipy",
        "pandas",
        "pyarrow",
        "scikit-learn",
        "joblib",
        "skops",
        "zstandard",
        "xxhash",
    ):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    info["versions"] = versions
    return info


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.scale: float = args.scale
        self.cache_dir = Path(args.cache_dir)
        self.work = Path(args.work_dir or self.cache_dir / f"files-s{self.scale:g}")
        self.work.mkdir(parents=True, exist_ok=True)

    def log(self, msg: str) -> None:
        if not self.args.quiet:
            print(msg, file=sys.stderr, flush=True)

    # -- one measurement -------------------------------------------------------------
    def run_one(self, spec: dict[str, Any]) -> dict[str, Any]:
        spec = {**spec, "prefault": self.args.prefault, "settle": self.args.settle}
        if self.args.inprocess:
            from .worker import Meter, measure

            Meter.collect = False
            try:
                return measure(spec)
            except Exception as exc:
                return {"op": spec["op"], "lib": spec.get("lib"), "error": repr(exc)}
        if self.args.sync and spec["op"] in _WRITES:
            # write back what earlier runs left dirty: otherwise a save pays for the
            # previous one's gigabyte (the kernel throttles writers over its dirty
            # limit), and whichever library runs second looks slow
            os.sync()
        env = {**os.environ, "SAFEPOINT_QUIET": "1", "PYTHONPATH": pythonpath()}
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "bench.worker", json.dumps(spec)],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=self.args.timeout,
            )
        except subprocess.TimeoutExpired:
            return {"op": spec["op"], "lib": spec.get("lib"), "error": "timeout"}
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            tail = (proc.stderr or "").strip().splitlines()[-3:]
            return {
                "op": spec["op"],
                "lib": spec.get("lib"),
                "error": f"worker exited {proc.returncode}: {' | '.join(tail)}",
            }
        out: dict[str, Any] = json.loads(lines[-1])
        return out

    # -- one model -----------------------------------------------------------------
    def build(self, name: str) -> dict[str, Any]:
        if self.args.inprocess:
            return ensure(name, self.scale, self.cache_dir)
        # built in a child so that this process stays small while children measure
        proc = subprocess.run(
            [sys.executable, "-m", "bench.models", name, str(self.scale), str(self.cache_dir)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": pythonpath()},
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise SystemExit(f"building {name} failed:\n{proc.stderr}")
        meta: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        return meta

    def model(self, name: str) -> dict[str, Any]:
        args = self.args
        t_start = time.time()
        load_start = os.getloadavg()
        self.log(f"== {name} (scale {self.scale:g}): {MODELS[name]}")
        meta = self.build(name)
        self.log(f"   built: {meta['summary']}")
        libs = [n for n in args.libs if n in LIBS]
        if name not in args.compress_models:
            libs = [n for n in libs if n not in COMPRESSED_LIBS]
        files = {n: str(self.work / f"{name}{LIBS[n].ext}") for n in libs}
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
        errors: dict[str, str] = {}

        def spec(op: str, lib: str | None, **kw: Any) -> dict[str, Any]:
            return {
                "op": op,
                "lib": lib,
                "model": name,
                "cache": meta["path"],
                "path": files.get(lib or "", str(self.work / f"{name}.raw")),
                **kw,
            }

        def record(op: str, lib: str, s: dict[str, Any]) -> bool:
            key = f"{op}:{lib}"
            if "error" in s:
                errors[key] = s["error"]
                self.log(f"   {op:14s} {lib:15s} ERROR {s['error'][:200]}")
                return False
            runs.setdefault(op, {}).setdefault(lib, []).append(s)
            extra = ""
            if s.get("sys") is not None:
                extra += f" sys {s['sys']:6.2f} s"
            if s.get("peak") is not None:
                extra += f" peak +{s['peak'] / 2**20:8.1f} MiB"
            if "ok" in s:
                extra += " ok" if s["ok"] else " FINGERPRINT MISMATCH"
            self.log(f"   {op:14s} {lib:15s} {s['s']:9.4f} s{extra}")
            return True

        def series(op: str, todo: list[tuple[str, dict[str, Any]]]) -> None:
            """Interleaved repeats; a failing or very slow (lib) is not repeated.

            Each repeat starts with the next library, so that none always runs
            right after the same neighbour (e.g. skops, whose saves leave the page
            cache and memory busiest).
            """
            active = list(todo)
            for r in range(args.repeat):
                nxt = []
                shift = r % len(active) if active else 0
                for lib, sp in active[shift:] + active[:shift]:
                    s = self.run_one({**sp, "check": sp.get("check", False) and r == 0})
                    if record(op, lib, s) and s["s"] < args.slow:
                        nxt.append((lib, sp))
                active = nxt

        savers = [n for n in libs if LIBS[n].save is not None]
        series("save", [(n, spec("save", n)) for n in savers])
        have = {n for n in savers if f"save:{n}" not in errors}
        series(
            "save_durable",
            [(n, spec("save_durable", n)) for n in DURABLE_LIBS if n in have],
        )
        loaders = [n for n in libs if LIBS[n].source in have]
        for n in loaders:
            self._warm(files[n])
        series(
            "load",
            [
                (
                    n,
                    spec(
                        "load",
                        n,
                        check=True,
                        check_path=meta["check_path"],
                        fingerprint=meta["fingerprint"],
                    ),
                )
                for n in loaders
            ],
        )
        series("inspect", [(n, spec("inspect", n)) for n in INSPECT_LIBS if n in have])
        if "safepoint" in have:
            src = files["safepoint"]
            series(
                "raw",
                [
                    (op, spec(op, None, source=src, path=str(self.work / f"{name}.raw")))
                    for op in RAW_OPS
                ],
            )
        if not args.keep_files:
            for p in set(files.values()):
                if os.path.exists(p):
                    os.unlink(p)
        return {
            "meta": meta,
            "runs": runs,
            "errors": errors,
            "repeat": args.repeat,
            "seconds": round(time.time() - t_start, 1),
            "inprocess": bool(args.inprocess),
            "mode": args.mode,
            "settle": args.settle,
            "loadavg_start": load_start,
            "loadavg_end": os.getloadavg(),
        }

    @staticmethod
    def _warm(path: str) -> None:
        if os.path.exists(path):
            with open(path, "rb", buffering=0) as f:
                while f.read(1 << 24):
                    pass


def summarize_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each numeric field over the repeats; min and max of the time."""
    out: dict[str, Any] = {"n": len(runs)}
    for key in (
        "s",
        "cpu",
        "peak",
        "retained",
        "size",
        "sys",
        "user",
        "minflt",
        "majflt",
        "reported_mib",
    ):
        vals = [r[key] for r in runs if r.get(key) is not None]
        if vals:
            out[key] = statistics.median(vals)
            if key == "s":
                out["s_min"], out["s_max"] = min(vals), max(vals)
    oks = [r["ok"] for r in runs if "ok" in r]
    if oks:
        out["ok"] = all(oks)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=0.1, help="model size; 1 = full size")
    ap.add_argument("--models", default="all", help="comma-separated, e.g. M1,M5 (default all)")
    ap.add_argument("--libs", default="all", help=f"comma-separated subset of {', '.join(LIBS)}")
    ap.add_argument("--repeat", type=int, default=7, help="runs per measurement (median)")
    ap.add_argument(
        "--compress-models",
        default="M2,M6",
        help="models on which compressed saves (joblib compress=3, safepoint zstd) run",
    )
    ap.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    ap.add_argument("--work-dir", default=None, help="where files are written (default: cache)")
    ap.add_argument("--results", default=None, help="JSON file the results are merged into")
    ap.add_argument(
        "--slow", type=float, default=120.0, help="a run slower than this is not repeated"
    )
    ap.add_argument("--timeout", type=float, default=3600.0)
    ap.add_argument("--keep-files", action="store_true")
    ap.add_argument(
        "--sync",
        action="store_true",
        help="flush dirty pages (os.sync) before each timed write, so that no save pays "
        "for the writeback of the previous one (slow: every run waits for the disk)",
    )
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument(
        "--cold",
        action="store_true",
        help="the default: fresh memory, nothing prefaulted, every worker waits --settle "
        "seconds before its timed operation",
    )
    mode.add_argument(
        "--prefault",
        action="store_true",
        help="touch and free fresh memory before each timed operation, so that a VM that "
        "returns free memory to its host does not fault it in during the operation "
        "(compares the libraries alone; results go to results-s<scale>-prefault.json)",
    )
    ap.add_argument(
        "--settle",
        type=float,
        default=None,
        help=f"cold mode: seconds each worker waits before its timed operation "
        f"(default {SETTLE_S:g}; 0 in --inprocess and --prefault runs)",
    )
    ap.add_argument(
        "--inprocess",
        action="store_true",
        help="run measurements in this process (correctness checks only: timings are not fresh)",
    )
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    args.mode = "prefault" if args.prefault else "cold"
    if args.settle is None:
        args.settle = 0.0 if args.prefault or args.inprocess else SETTLE_S
    args.models = list(MODELS) if args.models == "all" else args.models.split(",")
    args.libs = list(LIBS) if args.libs == "all" else args.libs.split(",")
    args.compress_models = (
        list(MODELS) if args.compress_models == "all" else args.compress_models.split(",")
    )
    bad = [m for m in args.models if m not in MODELS] + [n for n in args.libs if n not in LIBS]
    if bad:
        ap.error(f"unknown model or library: {', '.join(bad)}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    suffix = "-prefault" if args.prefault else ""
    results_path = Path(args.results or RESULTS / f"results-s{args.scale:g}{suffix}.json")
    results_path.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = (
        json.loads(results_path.read_text()) if results_path.exists() else {"models": {}}
    )
    command = "python -m bench.run " + " ".join(sys.argv[1:] if argv is None else argv)
    data.setdefault("models", {})
    runner = Runner(args)
    for name in args.models:
        res = runner.model(name)
        res["summary"] = {
            op: {lib: summarize_runs(rs) for lib, rs in by_lib.items()}
            for op, by_lib in res["runs"].items()
        }
        res["machine"] = machine()
        res["command"] = command
        data["models"][name] = res
        data["scale"] = args.scale
        data["mode"] = args.mode
        # written after every model, so that a long run keeps what it measured
        results_path.write_text(json.dumps(data, indent=1))
    print(render(data, only=args.models))
    print(f"\nresults: {results_path}", file=sys.stderr)
    return data


if __name__ == "__main__":
    main()
