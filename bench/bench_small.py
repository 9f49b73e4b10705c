"""Small and tree-ensemble models: safepoint against pickle, joblib and skops, in memory.

``python -m bench.bench_small`` times ``dumps``/``loads`` (to and from bytes, so
that the file system is not what is measured) of the objects of issue 19 in one
warm process: each round times every library once, in turn (interleaved, so that
a slow second of a shared machine hits all of them), and the median of
``--repeat`` rounds (31 by default) is reported with its ratio to pickle
(protocol 5). The fixed cost of one call is the time to save and load an empty
dict.

``--callgrind OP`` counts instructions instead, stable on a loaded machine: it runs
only safepoint's (or, with ``--libs pickle``, pickle's) OP of the ``--only`` objects,
``--repeat`` times inside one ``functools.reduce`` call, so that valgrind can count
just that call::

    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=functools_reduce \
        python -m bench.bench_small --callgrind load --only rf100 --repeat 3

(instructions per operation = "Collected" / repeat).

Examples::

    python -m bench.bench_small                       # every object, 31 rounds
    python -m bench.bench_small --only rf100 --repeat 11
    python -m bench.bench_small --libs pickle,safepoint --json out.json
    python -m bench.bench_small --stat min --repeat 15   # best rounds (a loaded machine)
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

# -- the objects -------------------------------------------------------------------------


def _iris() -> tuple[Any, Any]:
    from sklearn.datasets import load_iris

    return load_iris(return_X_y=True)


def _classification(n: int = 2_000, features: int = 20) -> tuple[Any, Any]:
    from sklearn.datasets import make_classification

    return make_classification(n_samples=n, n_features=features, n_informative=8, random_state=0)


def build_empty() -> Any:
    return {}


def build_small_dict() -> Any:
    return {"name": "run 7", "epoch": 3, "lr": 0.01, "weights": np.arange(64, dtype=np.float64)}


def build_knn() -> Any:
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier().fit(*_iris())


def build_pipeline() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(*_iris())


def build_rf(n: int) -> Callable[[], Any]:
    def build() -> Any:
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(n_estimators=n, random_state=0).fit(*_classification())

    return build


def build_extra() -> Any:
    from sklearn.ensemble import ExtraTreesClassifier

    return ExtraTreesClassifier(n_estimators=50, random_state=0).fit(*_classification())


def build_gb() -> Any:
    from sklearn.ensemble import GradientBoostingClassifier

    return GradientBoostingClassifier(n_estimators=50, random_state=0).fit(*_classification())


def build_hgb() -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=50, early_stopping=False, random_state=0).fit(
        *_classification(5_000)
    )


OBJECTS: dict[str, tuple[str, Callable[[], Any]]] = {
    "empty": ("an empty dict (the fixed cost)", build_empty),
    "dict": ("a small dict with an array", build_small_dict),
    "knn": ("iris KNN", build_knn),
    "pipe": ("StandardScaler + LogisticRegression", build_pipeline),
    "rf10": ("RandomForest, 10 trees", build_rf(10)),
    "rf100": ("RandomForest, 100 trees", build_rf(100)),
    "hgb50": ("HistGradientBoosting, 50 iterations", build_hgb),
    "et50": ("ExtraTrees, 50 trees", build_extra),
    "gb50": ("GradientBoosting, 50 stages", build_gb),
}

# -- the libraries: (dumps, prepare, loads) ------------------------------------------------


def _pickle() -> tuple[Callable[[Any], bytes], Callable[[bytes], Any]]:
    return (lambda obj: pickle.dumps(obj, protocol=5)), pickle.loads


def _joblib() -> tuple[Callable[[Any], bytes], Callable[[bytes], Any]]:
    import joblib

    def dumps(obj: Any) -> bytes:
        buf = io.BytesIO()
        joblib.dump(obj, buf)
        return buf.getvalue()

    def loads(data: bytes) -> Any:
        return joblib.load(io.BytesIO(data))

    return dumps, loads


def _skops() -> tuple[Callable[[Any], bytes], Callable[[bytes], Any]]:
    import skops.io

    trusted: dict[int, list[str]] = {}

    def loads(data: bytes) -> Any:
        # the audit (untrusted types) is listed once per file, outside the timing's
        # concern: a careful user reviews it once
        key = hash(data)
        if key not in trusted:
            trusted[key] = skops.io.get_untrusted_types(data=data)
        return skops.io.loads(data, trusted=trusted[key])

    return skops.io.dumps, loads


def _safepoint() -> tuple[Callable[[Any], bytes], Callable[[bytes], Any]]:
    import safepoint as sp

    return sp.dumps, sp.loads


LIBS: dict[str, Callable[[], tuple[Callable[[Any], bytes], Callable[[bytes], Any]]]] = {
    "pickle": _pickle,
    "joblib": _joblib,
    "skops": _skops,
    "safepoint": _safepoint,
}


def _time(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(
    obj: Any, libs: dict[str, Any], repeat: int, stat: Callable[[list[float]], float]
) -> dict[str, dict[str, float]]:
    """Seconds of dumps and loads per library (``stat`` of the interleaved rounds)."""
    blobs = {name: dumps(obj) for name, (dumps, _) in libs.items()}
    for name, (_, loads) in libs.items():
        loads(blobs[name])  # warm: imports, caches, skops' audit
    times: dict[str, dict[str, list[float]]] = {n: {"save": [], "load": []} for n in libs}
    for _ in range(repeat):
        for name, (dumps, loads) in libs.items():
            times[name]["save"].append(_time(lambda d=dumps: d(obj)))
            times[name]["load"].append(_time(lambda b=blobs[name], ld=loads: ld(b)))
    return {
        name: {
            "save": stat(t["save"]),
            "load": stat(t["load"]),
            "bytes": float(len(blobs[name])),
        }
        for name, t in times.items()
    }


def _fmt(s: float) -> str:
    return f"{s * 1e6:8.1f} us" if s < 1e-3 else f"{s * 1e3:8.2f} ms"


def callgrind(name: str, op: str, rounds: int, lib: str) -> None:
    """``rounds`` of one library's ``op`` of one object, inside one call of
    ``functools.reduce`` (valgrind's --toggle-collect=functools_reduce counts it alone)."""
    import functools

    dumps, loads = LIBS[lib]()
    obj = OBJECTS[name][1]()
    data = dumps(obj)
    loads(data)  # warm: imports and per-process caches
    if op == "save":
        functools.reduce(lambda _, __: dumps(obj), range(rounds), None)
    else:
        functools.reduce(lambda _, __: loads(data), range(rounds), None)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=31)
    ap.add_argument("--only", default=",".join(OBJECTS), help="objects, comma-separated")
    ap.add_argument("--libs", default=",".join(LIBS), help="libraries, comma-separated")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument(
        "--stat",
        choices=("median", "min"),
        default="median",
        help="median of the rounds, or the best round (least disturbed on a loaded machine)",
    )
    ap.add_argument(
        "--callgrind",
        metavar="OP",
        choices=("save", "load"),
        help="run safepoint's (--libs pickle: pickle's) OP of the --only objects --repeat "
        "times in one functools.reduce call, for valgrind --tool=callgrind",
    )
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    if args.callgrind:
        lib = "pickle" if args.libs == "pickle" else "safepoint"
        for name in names:
            callgrind(name, args.callgrind, args.repeat, lib)
        return {}
    libs: dict[str, Any] = {}
    for lib in args.libs.split(","):
        try:
            libs[lib] = LIBS[lib]()
        except ImportError:
            print(f"({lib} is not installed: left out)", file=sys.stderr)
    results: dict[str, Any] = {}
    stat = statistics.median if args.stat == "median" else min
    print(f"{args.stat} of {args.repeat} interleaved rounds; ratio = lib / pickle (protocol 5)")
    head = f"{'object':38} {'size':>9} " + " ".join(
        f"{lib + ' ' + op:>20}" for lib in libs for op in ("load", "save")
    )
    print(head)
    for name in names:
        label, build = OBJECTS[name]
        res = measure(build(), libs, args.repeat, stat)
        results[name] = res
        base = res.get("pickle")
        cells = []
        for lib in libs:
            for op in ("load", "save"):
                cell = _fmt(res[lib][op])
                if base and lib != "pickle":
                    cell += f" {res[lib][op] / base[op]:5.2f}x"
                cells.append(f"{cell:>20}")
        size = res["pickle"]["bytes"] if base else next(iter(res.values()))["bytes"]
        print(f"{label:38} {size / 1e3:7.1f}KB " + " ".join(cells), flush=True)
    if "empty" in results and "safepoint" in results["empty"]:
        e = results["empty"]["safepoint"]
        print(
            f"fixed cost per call (empty dict): save {e['save'] * 1e6:.1f} us, "
            f"load {e['load'] * 1e6:.1f} us"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"repeat": args.repeat, "stat": args.stat, "results": results}, f, indent=1)
    return results


if __name__ == "__main__":
    main()
