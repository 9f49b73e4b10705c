"""Cold start: from process start to the first prediction, for a 1 MB model.

    python -m bench.bench_coldstart --repeat 9

Three commands score one JSON-lines record with the same scikit-learn model (a
random forest of about 1 MB, fit on a DataFrame), each in a fresh process:

* ``score``: ``safepoint score -m model.sp -i record.jsonl -o -``; the time is
  until its first prediction line reaches stdout;
* ``serve``: ``safepoint serve -m model.sp``; the time is until the first
  ``POST /predict`` (polled every 5 ms from this process) answers 200;
* ``pickle``: the floor a user compares with: ``python -c`` a script that
  imports pandas, unpickles the model, reads the record and prints
  ``predict``, the time until that line reaches stdout.

Runs are interleaved, after one untimed round; min / median / max of
``--repeat``. Python's bytecode cache is on for the children, as for an installed
package (pip compiles it at install): with ``PYTHONDONTWRITEBYTECODE`` set, as on
the shared machine, every run compiled safepoint's ~80 modules from source (0.1 s
that no user pays); ``--no-bytecode`` measures that way. The import tree of each
command is checked with ``python -X importtime``: the modules and top-level
packages it imported and the milliseconds that safepoint's own modules took (self
time). Wall-clock figures on a shared machine are noisy: compare the columns of
one run, not runs of different days; the load average is printed with them.
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

PICKLE_SCRIPT = """
import json, pickle, sys
import pandas as pd
with open(sys.argv[1], "rb") as f:
    model = pickle.load(f)
with open(sys.argv[2]) as f:
    X = pd.DataFrame([json.loads(line) for line in f])
print(json.dumps({"prediction": model.predict(X).tolist()[0]}), flush=True)
"""


SCORE_IO = ("-i", "record.jsonl", "-o", "-")


#: whether the children may write and use Python's bytecode cache (``--no-bytecode``)
BYTECODE = True


def _env() -> dict[str, str]:
    src = ROOT / "src"
    path = [str(src)] if (src / "safepoint").is_dir() else []
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([*path, os.environ.get("PYTHONPATH", "")]).strip(os.pathsep),
        "SAFEPOINT_QUIET": "1",
    }
    if BYTECODE:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def build(folder: Path, trees: int) -> dict[str, Any]:
    """The model (.sp and .pkl) and one input record."""
    import pickle

    import numpy as np
    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier

    import safepoint as sp

    rng = np.random.default_rng(0)
    cols = [f"f{i}" for i in range(8)]
    X = pd.DataFrame(rng.standard_normal((2000, 8)), columns=cols)
    y = (X.f0 + X.f1 > 0).astype(int)
    model = RandomForestClassifier(n_estimators=trees, random_state=0).fit(X, y)
    sp.dump(model, folder / "model.sp")
    with open(folder / "model.pkl", "wb") as f:
        pickle.dump(model, f, protocol=5)
    with open(folder / "record.jsonl", "w") as f:
        f.write(json.dumps({c: float(v) for c, v in zip(cols, X.iloc[0], strict=True)}) + "\n")
    return {
        "sp_bytes": os.path.getsize(folder / "model.sp"),
        "pkl_bytes": os.path.getsize(folder / "model.pkl"),
        "trees": trees,
        "record": json.loads((folder / "record.jsonl").read_text()),
    }


def _until_line(cmd: list[str], cwd: Path) -> float:
    """Seconds from spawning ``cmd`` to its first line on stdout (then it is waited for)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    line = proc.stdout.readline() if proc.stdout else ""
    t = time.perf_counter() - t0
    _, err = proc.communicate(timeout=120)
    if proc.returncode != 0 or "prediction" not in line:
        raise RuntimeError(f"{cmd[3:5]} failed ({proc.returncode}): {line!r} {err[-500:]}")
    return t


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(port: int, body: bytes) -> int | None:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def _serve_first(folder: Path, record: dict[str, Any], timeout: float = 120.0) -> float:
    """Seconds from spawning ``safepoint serve`` to its first answered prediction."""
    port = _free_port()
    body = json.dumps(record).encode()
    cmd = [sys.executable, "-m", "safepoint.cli", "serve", "-m", "model.sp", "--port", str(port)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=folder, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        while time.perf_counter() - t0 < timeout:
            if proc.poll() is not None:
                err = proc.stderr.read().decode()[-500:] if proc.stderr else ""
                raise RuntimeError(f"serve exited {proc.returncode}: {err}")
            status = _post(port, body)
            if status == 200:
                return time.perf_counter() - t0
            if status is not None:
                raise RuntimeError(f"serve answered {status}")
            time.sleep(0.005)
        raise RuntimeError("serve did not answer in time")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def commands(folder: Path) -> dict[str, list[str]]:
    py = sys.executable
    return {
        "score": [py, "-m", "safepoint.cli", "score", *("-m", "model.sp"), *SCORE_IO],
        "pickle": [py, "-c", PICKLE_SCRIPT, "model.pkl", "record.jsonl"],
    }


#: run before a command's code: at exit, the modules it imported (``-X importtime`` does not
#: list those imported by ``importlib.import_module``, as plugins and a file's types are)
_COUNT = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('MODULES', len(sys.modules),"
    " sum(m.startswith('safepoint') for m in sys.modules), file=sys.stderr))\n"
)


def _counted(cmd: list[str]) -> list[str]:
    """``cmd`` (``-c CODE`` or ``-m MODULE``) with :data:`_COUNT` run first."""
    if cmd[1] == "-c":
        return [cmd[0], "-c", _COUNT + cmd[2], *cmd[3:]]
    code = (
        f"import runpy; sys.argv[1:] = {cmd[3:]!r}\n"
        f"runpy.run_module({cmd[2]!r}, run_name='__main__', alter_sys=True)"
    )
    return [cmd[0], "-c", _COUNT + code]


def importtime(cmd: list[str], folder: Path) -> dict[str, Any]:
    """Modules and top-level packages ``cmd`` imported, and the self time of
    safepoint's modules (those ``-X importtime`` lists)."""
    proc = subprocess.run(
        [cmd[0], "-X", "importtime", *_counted(cmd)[1:]],
        cwd=folder,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    packages: set[str] = set()
    own_us = total_us = modules = own = 0
    for line in proc.stderr.splitlines():
        if line.startswith("MODULES "):
            modules, own = (int(n) for n in line.split()[1:])
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        head, _cumulative, name = line.split("|", 2)
        self_us = int(head.split(":", 1)[1])
        top = name.strip().split(".")[0]
        total_us += self_us
        if top == "safepoint":
            own_us += self_us
        if not top.startswith("_"):
            packages.add(top)
    return {
        "packages": sorted(packages),
        "modules": modules,
        "safepoint_modules": own,
        "safepoint_self_ms": own_us / 1000,
        "all_self_ms": total_us / 1000,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--trees", type=int, default=40, help="forest size (40: about 1 MB)")
    ap.add_argument("--no-serve", action="store_true", help="skip `safepoint serve`")
    ap.add_argument(
        "--no-bytecode",
        action="store_true",
        help="PYTHONDONTWRITEBYTECODE=1 for the children: every module compiled from source",
    )
    args = ap.parse_args(argv)
    global BYTECODE
    BYTECODE = not args.no_bytecode
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        meta = build(folder, args.trees)
        cmds = commands(folder)
        times: dict[str, list[float]] = {"pickle": [], "score": []}
        if not args.no_serve:
            times["serve"] = []
        for r in range(-1, args.repeat):  # round -1: untimed (bytecode, disk cache)
            names = list(times)
            names = names[r % len(names) :] + names[: r % len(names)]
            for name in names:
                if name == "serve":
                    t = _serve_first(folder, meta["record"])
                else:
                    t = _until_line(cmds[name], folder)
                if r >= 0:
                    times[name].append(t)
        imports = {name: importtime(cmd, folder) for name, cmd in cmds.items()}
    summary: dict[str, dict[str, Any]] = {
        name: {
            "min": round(min(v), 3),
            "median": round(statistics.median(v), 3),
            "max": round(max(v), 3),
            "runs": [round(x, 3) for x in v],
        }
        for name, v in times.items()
    }
    pk = summary["pickle"]["median"]
    for name in summary:
        summary[name]["vs_pickle"] = round(summary[name]["median"] / pk, 2)
    extra = {
        name: sorted(set(imp["packages"]) - set(imports["pickle"]["packages"]))
        for name, imp in imports.items()
    }
    out = {
        "model": {k: v for k, v in meta.items() if k != "record"},
        "first_prediction_s": summary,
        "imports": {
            name: {
                "packages": len(imp["packages"]),
                **{k: v for k, v in imp.items() if k != "packages"},
            }
            for name, imp in imports.items()
        },
        "imported_beyond_pickle_script": extra,
        "bytecode": BYTECODE,
        "loadavg": os.getloadavg(),
    }
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
