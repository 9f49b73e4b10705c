"""Scoring throughput: safepoint's pipeline vs a plain pandas read + predict + write loop.

    python -m bench.bench_scoring --rows 2000000 --repeat 3

A LogisticRegression over 10 features scores a Parquet file into a Parquet file
(exactly-once commits included). The plain loop is the limit: the same reads,
predictions and writes with no schema checks, offsets or commits. Both run in
fresh subprocesses pinned to one core (``taskset -c 0`` when available), median
of ``--repeat`` runs. Target: >= 200,000 records/s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

SAFEPOINT = textwrap.dedent(
    """
    import sys, time
    from safepoint.workflows.scoring import ScoringPipeline
    model, src, out, bs = sys.argv[1:5]
    t = time.perf_counter()
    p = ScoringPipeline(model, batch_size=int(bs), quiet=True)
    p.write(p.apply(p.read(src)), out, schema="id: Int! @key, prediction: Int!")
    r = p.run()
    print(r.read / (time.perf_counter() - t))
    """
)
PLAIN = textwrap.dedent(
    """
    import sys, time
    import pandas as pd, pyarrow as pa, pyarrow.parquet as pq
    import safepoint as sp
    model, src, out, bs = sys.argv[1:5]
    t = time.perf_counter()
    clf = sp.load(model)
    pf = pq.ParquetFile(src)
    n = 0
    with pq.ParquetWriter(out, pa.schema([("id", pa.int64()), ("prediction", pa.int64())])) as w:
        for rb in pf.iter_batches(batch_size=int(bs)):
            df = rb.to_pandas()
            pred = clf.predict(df[[f"f{i}" for i in range(10)]])
            w.write_table(pa.table({"id": df["id"].to_numpy(), "prediction": pred}))
            n += len(df)
    print(n / (time.perf_counter() - t))
    """
)


def _prepare(folder: Path, rows: int) -> tuple[Path, Path]:
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    import safepoint as sp

    rng = np.random.default_rng(0)
    cols = [f"f{i}" for i in range(10)]
    X = pd.DataFrame(rng.standard_normal((5000, 10)), columns=cols)
    model = LogisticRegression().fit(X, (X.f0 + X.f1 > 0).astype(int))
    sp.dump(model, folder / "model.sp")
    data = pd.DataFrame(rng.standard_normal((rows, 10)), columns=cols)
    data.insert(0, "id", np.arange(rows))
    data.to_parquet(folder / "features.parquet", row_group_size=100_000)
    return folder / "model.sp", folder / "features.parquet"


def _run(code: str, args: list[str]) -> float:
    cmd = [sys.executable, "-c", code, *args]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "SAFEPOINT_QUIET": "1",
    }
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--batch-size", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model, src = _prepare(folder, args.rows)
        results: dict[str, list[float]] = {"safepoint": [], "plain": []}
        for i in range(args.repeat):
            out = folder / f"out{i}"
            results["safepoint"].append(
                _run(SAFEPOINT, [str(model), str(src), str(out), str(args.batch_size)])
            )
            results["plain"].append(
                _run(
                    PLAIN,
                    [str(model), str(src), str(folder / f"plain{i}.parquet"), str(args.batch_size)],
                )
            )
            shutil.rmtree(out, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in results.items()}
    summary = {
        "rows": args.rows,
        "safepoint_records_per_s": round(med["safepoint"]),
        "plain_records_per_s": round(med["plain"]),
        "ratio_to_plain": round(med["safepoint"] / med["plain"], 3),
        "target_200k_met": med["safepoint"] >= 200_000,
    }
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
