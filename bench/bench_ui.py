"""Console page latency on a store of 1,000 models x 20 versions (target: <= 100 ms).

    python -m bench.bench_ui [--models 1000 --versions 20] [--store DIR]

Builds the store once (small models, so that the catalog, not blob size, is what
grows; kept in --store for reuse), then requests the models list, a model page
and a version page through the ASGI app in-process, median and p95 of 30 requests
each after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from typing import Any


def build(path: str, n_models: int, n_versions: int) -> Any:
    import numpy as np

    import safepoint as sp

    store = sp.Store(path)
    have = set(store.models())
    for i in range(n_models):
        name = f"team{i % 10}/model-{i:04d}"
        if name in have:
            continue
        for v in range(n_versions):
            store.put(
                name,
                {"w": np.full(4, v, dtype=np.float32)},
                metrics={"auc": 0.5 + v / 100},
                alias="production" if v == n_versions - 1 else None,
            )
    return store


def timed(client: Any, url: str, n: int = 30) -> dict[str, float]:
    for _ in range(3):
        assert client.get(url).status_code == 200, url
    times = []
    for _ in range(n):
        t = time.perf_counter()
        r = client.get(url)
        times.append(time.perf_counter() - t)
        assert r.status_code == 200
    q = statistics.quantiles(times, n=20)
    return {
        "median_ms": round(statistics.median(times) * 1000, 1),
        "p95_ms": round(q[18] * 1000, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--versions", type=int, default=20)
    ap.add_argument("--store", default=None)
    args = ap.parse_args(argv)
    from starlette.testclient import TestClient

    from safepoint.ui import create_app

    folder = args.store or os.path.join(tempfile.gettempdir(), "sp-bench-ui")
    t = time.perf_counter()
    store = build(folder, args.models, args.versions)
    built = time.perf_counter() - t
    client = TestClient(create_app(store))
    name = "team3/model-0003"
    results = {
        "models": args.models,
        "versions": args.versions,
        "build_s": round(built, 1),
        "models_list": timed(client, "/"),
        "model_page": timed(client, f"/model/{name}"),
        "version_page": timed(client, f"/version/{args.versions}/{name}"),
    }
    results["target_met"] = all(
        results[k]["median_ms"] <= 100 for k in ("models_list", "model_page", "version_page")
    )
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
