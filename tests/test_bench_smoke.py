"""The benchmark harness (bench/) at a tiny scale: correctness only, no timings asserted.

Every model M1-M6 is built, saved and loaded by every library in one process
(``--inprocess``), and each load must reproduce the saved model's fingerprint;
then one model goes through the real path, a fresh worker process per
measurement. The full benchmark is ``python -m bench.run --scale 1``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("joblib")
pytest.importorskip("skops")


def _module(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m name args`` from the checkout; asserts it exited 0."""
    proc = subprocess.run(
        [sys.executable, "-m", name, *args],
        cwd=ROOT,
        # this tree's safepoint, also in --inprocess runs (not whichever is installed)
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _bench(tmp_path: Path, *args: str) -> dict:
    results = tmp_path / "results.json"
    proc = _module(
        "bench.run",
        "--scale",
        "0.0005",
        "--repeat",
        "1",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--results",
        str(results),
        "--quiet",
        *args,
    )
    data = json.loads(results.read_text())
    data["stdout"] = proc.stdout
    return data


@pytest.mark.slow
def test_all_models_and_libraries_round_trip(tmp_path: Path) -> None:
    data = _bench(tmp_path, "--inprocess", "--compress-models", "all")
    models = data["models"]
    assert sorted(models) == ["M1", "M2", "M3", "M4", "M5", "M6"]
    for name, res in models.items():
        loads = res["summary"]["load"]
        expected = {
            "pickle",
            "joblib",
            "joblib-mmap",
            "joblib-z3",
            "safepoint",
            "safepoint-mmap",
            "safepoint-zstd",
        }
        if name != "M6":
            expected.add("skops")
        assert set(loads) == expected, (name, res["errors"])
        # every library's load reproduces what the saved model computes / holds
        assert all(s["ok"] for s in loads.values()), (name, loads)
        saves = res["summary"]["save"]
        assert saves["safepoint"]["size"] > 0 and saves["pickle"]["size"] > 0
        assert set(res["summary"]["save_durable"]) == {"pickle", "safepoint"}
        assert set(res["summary"]["raw"]) == {
            "raw_read",
            "raw_write",
            "raw_write_new",
            "raw_write_chunked",
            "raw_write_fsync",
        }
        assert "safepoint" in res["summary"]["inspect"]
    # skops has no DataFrame support: M6 records why instead of a number
    assert "save:skops" in models["M6"]["errors"]
    assert set(models["M6"]["errors"]) == {"save:skops"}
    for name in ("M1", "M2", "M3", "M4", "M5"):
        assert models[name]["errors"] == {}, models[name]["errors"]
    table = data["stdout"]
    assert "skops cannot save pandas DataFrames" in table
    for name in models:
        assert f"| {name} |" in table


@pytest.mark.slow
def test_fresh_process_measurements(tmp_path: Path) -> None:
    # cold (the default) without its wait between workers, which only matters for timings
    data = _bench(
        tmp_path, "--models", "M5", "--libs", "pickle,safepoint,safepoint-mmap", "--settle", "0"
    )
    res = data["models"]["M5"]
    assert res["errors"] == {}
    assert not res["inprocess"]
    assert res["mode"] == "cold" and data["mode"] == "cold"
    save = res["summary"]["save"]["safepoint"]
    # every cell keeps its spread and the kernel's counts, not only the median
    assert save["s_min"] <= save["s"] <= save["s_max"]
    assert {"sys", "user", "minflt", "majflt"} <= set(save)
    assert {"raw_write_fsync", "raw_write_chunked"} <= set(res["summary"]["raw"])
    # the cold table holds a save to the faster of the two raw writes of the same bytes
    raw = res["summary"]["raw"]
    best = min(raw["raw_write_new"]["s"], raw["raw_write_chunked"]["s"])
    assert f"{save['s'] / best:.2f}x" in data["stdout"]
    assert "### Cold: first save in a fresh process" in data["stdout"]
    load = res["summary"]["load"]
    assert set(load) == {"pickle", "safepoint", "safepoint-mmap"}
    assert all(s["ok"] for s in load.values())
    # a fresh process reports its own peak memory (Linux: VmHWM after a reset)
    assert all(isinstance(s.get("peak"), int) and s["peak"] >= 0 for s in load.values())
    assert res["summary"]["save"]["safepoint"]["size"] >= res["meta"]["deep_size"] // 2


@pytest.mark.slow
def test_prefault_mode_is_the_second_table(tmp_path: Path) -> None:
    data = _bench(tmp_path, "--prefault", "--models", "M5", "--libs", "pickle,safepoint")
    res = data["models"]["M5"]
    assert res["errors"] == {}
    assert res["mode"] == "prefault" and res["settle"] == 0
    assert "### Cold" not in data["stdout"]
    assert "### Save (median" in data["stdout"]


def test_bench_small_runs(tmp_path: Path) -> None:
    """bench/bench_small.py at one round (correctness of the harness, no timings)."""
    out = tmp_path / "small.json"
    proc = _module(
        "bench.bench_small",
        "--repeat",
        "1",
        "--only",
        "empty,dict,pipe",
        "--libs",
        "pickle,safepoint",
        "--json",
        str(out),
    )
    assert "fixed cost per call" in proc.stdout
    data = json.loads(out.read_text())
    assert set(data["results"]) == {"empty", "dict", "pipe"}
    assert set(data["results"]["pipe"]) == {"pickle", "safepoint"}


def test_write_pattern_batches_cover_the_bytes() -> None:
    """bench/bench_write_pattern.py cuts the same bytes both ways: aligned batches end
    at multiples of the step from the start offset, unaligned ones once full."""
    from bench.bench_write_pattern import _batches

    parts = [memoryview(bytes([i]) * n) for i, n in enumerate([5, 0, 70, 3, 130])]
    whole = b"".join(parts)
    for aligned in (True, False):
        for start in (0, 7, 32):
            batches = _batches(parts, start, 32, aligned)
            assert b"".join(b"".join(b) for b in batches) == whole
            ends = [start]
            for b in batches:
                ends.append(ends[-1] + sum(len(p) for p in b))
            if aligned:
                assert all(e % 32 == 0 for e in ends[1:-1])


@pytest.mark.slow
def test_bench_write_pattern_runs(tmp_path: Path) -> None:
    """bench/bench_write_pattern.py at a tiny scale, one round, no wait (harness only)."""

    def rows(*extra: str) -> list[str]:
        cache = str(tmp_path / "cache")
        args = ["--model", "M2", "--scale", "0.0005", "--rounds", "1", "--settle", "0"]
        proc = _module("bench.bench_write_pattern", *args, *extra, "--cache-dir", cache)
        return [line for line in proc.stdout.splitlines() if line.startswith("| ") and "ms" in line]

    got = rows()
    assert len(got) == 4 and "aligned, write then hash" in got[0]
    # --chunks: each chosen variant once per batch size, labelled with it
    got = rows("--variants", "1,4", "--chunks", "4,16")
    assert [r.split(" | ")[0] for r in got] == [
        "| aligned, write then hash, 4 KiB",
        "| aligned, write then hash, 16 KiB",
        "| aligned, no hash, 4 KiB",
        "| aligned, no hash, 16 KiB",
    ]
