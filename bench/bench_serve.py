"""Load test of `safepoint serve` from a second process on loopback.

    python -m bench.bench_serve --seconds 10

Starts the server as a subprocess (LogisticRegression over 10 features, in a
temporary store), then sends bounded loads of single records and batches of
100 over keep-alive connections from this process, and moves the model's alias
half-way through a third load to show that no request fails during a hot
reload. Prints requests/s and p50/p99 latency. Loopback only; every loop is
bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _load(
    client: Any, url: str, body: Any, seconds: float, max_requests: int, during: Any = None
) -> dict[str, Any]:
    lat: list[float] = []
    failures = 0
    versions: set[str] = set()
    start = time.perf_counter()
    while time.perf_counter() - start < seconds and len(lat) < max_requests:
        if during is not None and time.perf_counter() - start > seconds / 4:
            during()
            during = None
        t = time.perf_counter()
        r = client.post(url, json=body)
        lat.append(time.perf_counter() - t)
        if r.status_code != 200:
            failures += 1
        else:
            versions.add(r.json()["version"])
    total = time.perf_counter() - start
    q = statistics.quantiles(lat, n=100)
    return {
        "requests": len(lat),
        "requests_per_s": round(len(lat) / total, 1),
        "p50_ms": round(q[49] * 1000, 2),
        "p99_ms": round(q[98] * 1000, 2),
        "failures": failures,
        "versions": sorted(versions),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--max-requests", type=int, default=20_000)
    args = ap.parse_args(argv)

    import httpx
    import numpy as np
    import pandas as pd
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression

    import safepoint as sp

    cols = [f"f{i}" for i in range(10)]
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.standard_normal((2000, 10)), columns=cols)
    y = (X.f0 > 0).astype(int)
    with tempfile.TemporaryDirectory() as tmp:
        store = sp.Store(os.path.join(tmp, "store"))
        store.put("bench/clf", LogisticRegression().fit(X, y), alias="production")
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "safepoint.cli",
                "serve",
                "--model",
                "bench/clf@production",
                "--store",
                store.url,
                "--port",
                str(port),
                "--reload-interval",
                "0.5",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(url + "/ready", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            record = {c: 0.1 for c in cols}
            batch = {"records": [record] * 100}

            def move() -> None:
                v2 = store.put("bench/clf", DummyClassifier().fit(X, y))
                store.set_alias("bench/clf", "production", v2.version, expected=1)

            with httpx.Client(timeout=30) as client:
                single = _load(client, url + "/predict", record, args.seconds, args.max_requests)
                batched = _load(
                    client, url + "/predict", batch, args.seconds, args.max_requests // 10
                )
                reload = _load(
                    client, url + "/predict", record, args.seconds, args.max_requests, during=move
                )
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    summary = {
        "single": single,
        "batch_of_100": {**batched, "records_per_s": round(batched["requests_per_s"] * 100, 1)},
        "during_hot_reload": reload,
    }
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
