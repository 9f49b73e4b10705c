"""The fuzzing campaign: every atheris harness of tests/adversarial, one table of figures.

    python tools/fuzz_campaign.py --out /tmp/fuzz-campaign --runs 1000000 --max-time 3600
    python tools/fuzz_campaign.py --harness pickle,joblib --max-time 60 --json

For each harness the tool writes the seed corpus (``fuzz_seeds.py``, through the
harness's ``--make-seeds``) into ``OUT/<harness>/seeds``, then runs the harness as a
subprocess (all harnesses concurrently) with its corpus in ``OUT/<harness>/corpus``,
reproducers in ``OUT/<harness>/artifacts`` and logs in ``OUT/<harness>/log-*.txt``,
until it has made ``--runs`` executions or run ``--max-time`` seconds of wall time,
whichever comes first. An exception other than ``SafepointError`` (or code that ran) is
recorded by the harness itself, one reproducer per distinct bug, and fuzzing goes on
(``SP_FUZZ_FINDINGS``, see ``fuzz_common.py``). libFuzzer stops at a timeout, an
out-of-memory or a crash of the interpreter: the tool then records it and restarts the
harness on the same corpus with what is left of both budgets (at most
``--max-findings`` times), so a campaign's figures are the sum of its runs.

Figures, per harness: executions (the harness's own count, ``execs-<pid>.json``, or
libFuzzer's final stats, whichever is larger), wall time (measured here from the end
of seed making, including the seconds each run spends importing), executions per
second, coverage (``cov``: edges of safepoint's code; ``ft``: features) and corpus
size, and the findings: kind (crash = an exception other than SafepointError, or code
that ran; timeout; oom), the reproducer, the exception and how many inputs hit it.

Nothing is written into the repository: ``--out`` defaults to a new temporary folder.
Prefix the command with ``nice -n 15`` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADV = os.path.join(ROOT, "tests", "adversarial")


@dataclass(frozen=True)
class Harness:
    name: str
    script: str
    mode: str
    max_len: int


HARNESSES = [
    Harness("reader", "fuzz_reader.py", "file", 100_000),
    Harness("manifest", "fuzz_reader.py", "manifest", 65_536),
    Harness("pickle", "fuzz_pickle.py", "pickle", 65_536),
    Harness("joblib", "fuzz_importer.py", "joblib", 100_000),
    Harness("skops", "fuzz_importer.py", "skops", 100_000),
    Harness("skops-schema", "fuzz_importer.py", "skops-schema", 65_536),
]


@dataclass
class Finding:
    kind: str  # crash, timeout, oom, leak, unknown
    reproducer: str
    error: str  # the exception's last line or libFuzzer's verdict
    count: int = 1  # inputs that hit it (the harness records one reproducer per bug)
    where: str = ""


def harness_findings(artifacts: str) -> list[Finding]:
    """The findings the harnesses recorded themselves (``fuzz_common._Findings``)."""
    merged: dict[str, Finding] = {}
    if not os.path.isdir(artifacts):
        return []
    for name in sorted(os.listdir(artifacts)):
        if not (name.startswith("findings-") and name.endswith(".json")):
            continue
        with open(os.path.join(artifacts, name)) as f:
            for e in json.load(f):
                if e["key"] in merged:
                    merged[e["key"]].count += e["count"]
                else:
                    merged[e["key"]] = Finding(
                        "crash", e["reproducer"], e["error"], e["count"], e["key"]
                    )
    return list(merged.values())


@dataclass
class Result:
    harness: str
    executions: int = 0
    wall_seconds: float = 0.0
    seed_seconds: float = 0.0
    cov: int = 0
    ft: int = 0
    corpus: int = 0
    peak_rss_mb: int = 0
    runs: int = 0
    stopped: str = ""  # "runs", "time", "findings", "error: ..."
    findings: list[Finding] = field(default_factory=list)

    @property
    def exec_per_sec(self) -> float:
        return self.executions / self.wall_seconds if self.wall_seconds else 0.0


_STATUS = re.compile(r"^#(\d+)\s+\w+.*?cov: (\d+) ft: (\d+)(?: corp: (\d+))?", re.M)
_STAT = re.compile(r"^stat::(\w+):\s*(\d+)", re.M)
_WRITTEN = re.compile(r"Test unit written to (\S+)")
_NEW_UNIT = re.compile(r"^(?:Done )?(\d+) runs in", re.M)


def parse_log(text: str) -> dict[str, Any]:
    """The figures of one libFuzzer run from its log."""
    out: dict[str, Any] = {"executions": 0, "cov": 0, "ft": 0, "corpus": 0, "peak_rss_mb": 0}
    status = _STATUS.findall(text)
    if status:
        last = status[-1]
        out["executions"] = int(last[0])
        out["cov"], out["ft"] = int(last[1]), int(last[2])
        out["corpus"] = int(last[3] or 0)
    stats = dict(_STAT.findall(text))
    if "number_of_executed_units" in stats:
        out["executions"] = max(out["executions"], int(stats["number_of_executed_units"]))
    if "peak_rss_mb" in stats:
        out["peak_rss_mb"] = int(stats["peak_rss_mb"])
    done = _NEW_UNIT.findall(text)
    if done:
        out["executions"] = max(out["executions"], int(done[-1]))
    out["findings"] = [asdict(f) for f in _findings(text)]
    return out


def _findings(text: str) -> list[Finding]:
    found = []
    for path in _WRITTEN.findall(text):
        base = os.path.basename(path)
        kind = base.split("-", 1)[0] if "-" in base else "unknown"
        found.append(Finding(kind, path, _error_line(text, kind)))
    return found


def _error_line(text: str, kind: str) -> str:
    if kind == "timeout":
        return "libFuzzer: timeout"
    if kind == "oom":
        return "libFuzzer: out-of-memory (rss limit)"
    m = text.find("=== Uncaught Python exception: ===")
    if m >= 0:
        lines = [ln for ln in text[m:].splitlines()[1:] if ln.strip()]
        # the traceback ends with "Type: message" before libFuzzer's own lines
        for i, ln in enumerate(lines):
            if ln.startswith("==") or ln.startswith("MS:"):
                return lines[i - 1].strip() if i else ""
        return lines[-1].strip() if lines else ""
    m2 = re.search(r"==\d+== ERROR: libFuzzer: ([^\n]+)", text)
    return m2.group(1) if m2 else "unknown"


def _env(h: Harness, work: str) -> dict[str, str]:
    env = dict(os.environ)
    env["SP_FUZZ_MODE"] = h.mode
    env["SP_FUZZ_WORKDIR"] = work
    env["SP_FUZZ_FINDINGS"] = os.path.join(os.path.dirname(work), "artifacts")
    src = os.path.join(ROOT, "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def make_seeds(h: Harness, folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    subprocess.run(
        [sys.executable, os.path.join(ADV, h.script), "--make-seeds", folder],
        env=_env(h, os.path.join(os.path.dirname(folder), "work")),
        check=True,
        stdout=subprocess.DEVNULL,
    )


def run_harness(
    h: Harness,
    out: str,
    *,
    runs: int,
    max_time: float,
    timeout: int,
    rss_limit_mb: int,
    max_findings: int,
    echo: bool = False,
) -> Result:
    base = os.path.join(out, h.name)
    seeds, corpus = os.path.join(base, "seeds"), os.path.join(base, "corpus")
    artifacts, work = os.path.join(base, "artifacts"), os.path.join(base, "work")
    for d in (corpus, artifacts, work):
        os.makedirs(d, exist_ok=True)
    res = Result(h.name)
    t0 = time.monotonic()
    try:
        make_seeds(h, seeds)
    except subprocess.CalledProcessError as exc:
        res.stopped = f"error: seeds ({exc})"
        return res
    res.seed_seconds = time.monotonic() - t0
    # the wall budget starts after the seeds are written
    start = time.monotonic()
    while True:
        left_runs = runs - res.executions
        left_time = max_time - (time.monotonic() - start)
        if left_runs <= 0:
            res.stopped = "runs"
            break
        if left_time < 1:
            res.stopped = "time"
            break
        if len(res.findings) >= max_findings:
            res.stopped = "findings"
            break
        log_path = os.path.join(base, f"log-{res.runs}.txt")
        cmd = [
            sys.executable,
            os.path.join(ADV, h.script),
            corpus,  # new inputs go into the first folder
            seeds,
            f"-runs={left_runs}",
            f"-max_total_time={max(1, int(left_time))}",
            f"-timeout={timeout}",
            f"-rss_limit_mb={rss_limit_mb}",
            f"-max_len={h.max_len}",
            f"-artifact_prefix={artifacts}{os.sep}",
            "-print_final_stats=1",
        ]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, env=_env(h, work), stdout=log, stderr=subprocess.STDOUT)
            # the harness's imports are not in libFuzzer's -max_total_time: the wall
            # budget is enforced here too (with a margin for the final stats)
            try:
                proc.wait(timeout=left_time + 5)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGINT)  # libFuzzer prints its final stats
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        res.runs += 1
        with open(log_path, encoding="utf-8", errors="replace") as f:
            got = parse_log(f.read())
        counted = os.path.join(artifacts, f"execs-{proc.pid}.json")
        if os.path.exists(counted):
            with open(counted) as f:
                got["executions"] = max(got["executions"], json.load(f)["executions"])
        res.executions += got["executions"]
        res.cov, res.ft = max(res.cov, got["cov"]), max(res.ft, got["ft"])
        res.corpus = max(res.corpus, got["corpus"])
        res.peak_rss_mb = max(res.peak_rss_mb, got["peak_rss_mb"])
        new = [Finding(**f) for f in got["findings"]]
        res.findings += new
        if echo:
            print(
                f"[{h.name}] run {res.runs}: rc={proc.returncode} "
                f"execs={got['executions']} cov={got['cov']} findings={len(new)}",
                file=sys.stderr,
                flush=True,
            )
        if time.monotonic() - start >= max_time - 1:
            res.stopped = "time"
            break
        if proc.returncode != 0 and not new:
            res.stopped = f"error: exit {proc.returncode} without a reproducer (see {log_path})"
            break
        if proc.returncode == 0 and got["executions"] == 0:
            res.stopped = f"error: no executions (see {log_path})"
            break
    res.wall_seconds = time.monotonic() - start
    res.findings = harness_findings(artifacts) + res.findings
    return res


def table(results: list[Result]) -> str:
    head = ("harness", "execs", "wall s", "exec/s", "cov", "ft", "corpus", "runs", "found", "stop")
    rows = [
        (
            r.harness,
            f"{r.executions:,}",
            f"{r.wall_seconds:.0f}",
            f"{r.exec_per_sec:.0f}",
            str(r.cov),
            str(r.ft),
            str(r.corpus),
            str(r.runs),
            str(len(r.findings)),
            r.stopped,
        )
        for r in results
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in [head, *rows]
    ]
    for r in results:
        for f in r.findings:
            lines.append(f"{r.harness}: {f.kind} x{f.count} {f.where} {f.reproducer}: {f.error}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="folder for seeds, corpora, logs (default: a new temp dir)")
    ap.add_argument("--harness", default="all", help="comma-separated names, or all")
    ap.add_argument("--runs", type=int, default=1_000_000, help="executions per harness")
    ap.add_argument("--max-time", type=float, default=3600, help="wall seconds per harness")
    ap.add_argument("--timeout", type=int, default=10, help="seconds per input (a hang)")
    ap.add_argument("--rss-limit-mb", type=int, default=4096)
    ap.add_argument("--max-findings", type=int, default=20, help="restarts after findings")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = ap.parse_args(argv)
    chosen = (
        HARNESSES
        if args.harness == "all"
        else [h for h in HARNESSES if h.name in args.harness.split(",")]
    )
    if not chosen:
        ap.error(f"no harness named {args.harness!r}: {', '.join(h.name for h in HARNESSES)}")
    out = args.out or tempfile.mkdtemp(prefix="fuzz-campaign-")
    os.makedirs(out, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    results: dict[str, Result] = {}

    def one(h: Harness) -> None:
        results[h.name] = run_harness(
            h,
            out,
            runs=args.runs,
            max_time=args.max_time,
            timeout=args.timeout,
            rss_limit_mb=args.rss_limit_mb,
            max_findings=args.max_findings,
            echo=not args.quiet,
        )

    threads = [threading.Thread(target=one, args=(h,)) for h in chosen]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ordered = [results[h.name] for h in chosen]
    summary = {
        "started": started,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "out": out,
        "cpus": os.cpu_count(),
        "results": [{**asdict(r), "exec_per_sec": round(r.exec_per_sec, 1)} for r in ordered],
    }
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"campaign {started} -> {summary['finished']}, out: {out}")
        print(table(ordered))
    return 1 if any(r.findings or r.stopped.startswith("error") for r in ordered) else 0


if __name__ == "__main__":
    sys.exit(main())
