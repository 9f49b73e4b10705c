"""The store's fault run at full scale: kill -9, full disks, terminated database sessions,
a killed S3 server, lost catalogs. Prints one table (and ``--json``) of what happened.

    python tools/store_faults.py                      # every class, local + SQLite
    python tools/store_faults.py --backend postgres   # the catalog on PostgreSQL
    python tools/store_faults.py --backend s3         # blobs on a moto S3 server
    python tools/store_faults.py --classes put,alias --trials put=50,alias=20

Each **kill class** runs ``trials`` times: a forked worker (its own Store) loops over one
kind of operation and reports every operation that returned on a pipe; it is killed with
SIGKILL at a random instant (0 to ``--window`` s, default 0.4, after it is ready).
Afterwards the run checks that

* every reported operation is in the catalog (a version with its digest, an alias move,
  a deletion, a checkpoint value): **lost**;
* every visible version loads and verifies: **torn**;
* no operation is visible twice: **duplicated**;
* after the catalog is deleted, ``recover`` rebuilds it with every version and alias of
  the original (``safepoint.testing.recovery.compare``): **lost after recover**;
  versions only the rebuilt catalog has (puts killed between record and commit) are
  counted as **extra** and verified.

The other classes: **disk-full** fills a small tmpfs (mounted here: needs root) with puts
and checkpoint sets; every failure must be a StorageFullError and the store must stay
readable. **pg-terminate** terminates the store's PostgreSQL sessions every 30 ms while a
process puts (``--backend postgres``). **s3-kill** kills the S3 server during a put
(``--backend s3``). Counts of wrong error types are reported as **bad errors**.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from safepoint.errors import (
    AliasConflictError,
    BackendUnavailableError,
    NotFoundError,
    SafepointError,
    SafepointWarning,
    StorageFullError,
)
from safepoint.stores import Store
from safepoint.testing.recovery import compare, snapshot
from safepoint.testing.s3 import start_moto_server
from safepoint.testing.store_conformance import lose_catalog

CTX = mp.get_context("fork")
PG_URL = os.environ.get("SAFEPOINT_TEST_PG", "postgresql://127.0.0.1:5432/test")
DEFAULT_TRIALS = {
    "put": 1000,
    "alias": 300,
    "checkpoint": 300,
    "delete": 300,
    "gc": 300,
    "disk-full": 20,
    "pg-terminate": 20,
    "s3-kill": 20,
}


@dataclass
class Result:
    """One fault class: what was tried and what went wrong (all zero is the goal)."""

    fault: str
    backend: str
    trials: int = 0
    operations: int = 0
    lost: int = 0
    torn: int = 0
    duplicated: int = 0
    lost_after_recover: int = 0
    changed_after_recover: int = 0
    extra_after_recover: int = 0
    bad_errors: int = 0
    errors_seen: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


# -- backends ----------------------------------------------------------------------------
class Backend:
    """Opens stores of one kind (a factory that forked workers call again)."""

    def __init__(self, kind: str, root: Path) -> None:
        self.kind = kind
        self.root = root
        self.metadata: str | None = None
        self.options: dict[str, Any] | None = None
        self._moto: subprocess.Popen[bytes] | None = None
        self._schemas: list[str] = []

    def new(self, name: str) -> str:
        """A fresh store location for one fault class; its URL."""
        if self.kind == "postgres":
            import sqlalchemy as sa

            schema = "spf_" + uuid.uuid4().hex[:10]
            eng = sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1))
            with eng.begin() as c:
                c.exec_driver_sql(f"CREATE SCHEMA {schema}")
            eng.dispose()
            self._schemas.append(schema)
            self.metadata = f"{PG_URL}?options=-csearch_path%3D{schema}&application_name={schema}"
            return str(self.root / name)
        if self.kind == "s3":
            endpoint = self.start_moto()
            bucket = "spf-" + uuid.uuid4().hex[:10]
            import boto3

            boto3.client(
                "s3",
                endpoint_url=endpoint,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
                region_name="us-east-1",
            ).create_bucket(Bucket=bucket)
            self.metadata = f"sqlite:///{self.root}/{name}-catalog.db"
            return f"s3://{bucket}/{name}"
        return str(self.root / name)

    def open(self, url: str) -> Store:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*serves one user", SafepointWarning)
            return Store(url, metadata=self.metadata, storage_options=self.options)

    def start_moto(self) -> str:
        if self._moto is not None and self._moto.poll() is None:
            return self.options["client_kwargs"]["endpoint_url"]  # type: ignore[index]
        self._moto, endpoint = start_moto_server()
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        self.options = {
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        }
        return endpoint

    def kill_moto(self) -> None:
        if self._moto is not None:
            self._moto.kill()
            self._moto.wait(10)
            self._moto = None

    def close(self) -> None:
        self.kill_moto()
        if self._schemas:
            import sqlalchemy as sa

            eng = sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1))
            with eng.begin() as c:
                for schema in self._schemas:
                    c.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            eng.dispose()


# -- kill classes: workers ------------------------------------------------------------------
def _say(w: int, line: str) -> None:
    os.write(w, (line + "\n").encode())


def w_put(store: Store, seed: int, w: int) -> None:
    rng = np.random.default_rng(seed)
    ckpt = store.checkpointer("faults/state")
    i = 0
    while True:
        size = int(rng.integers(1, 400_000))
        mv = store.put("faults/model", {"seed": seed, "i": i, "w": rng.random(size)})
        _say(w, f"V {mv.version} {mv.digest} {seed} {i}")
        value = rng.random(int(rng.integers(1, 60_000)))
        ckpt.set(f"k{i % 3}", value)
        _say(w, f"K k{i % 3} {float(value.sum())!r}")
        i += 1


def w_alias(store: Store, seed: int, w: int) -> None:
    rng = random.Random(seed)
    versions = [v.version for v in store.versions("faults/model")]
    while True:
        cur = store.aliases("faults/model").get("prod")
        target = rng.choice([v for v in versions if v != cur])
        store.set_alias("faults/model", "prod", target, expected=cur)
        _say(w, f"A {target}")


def w_checkpoint(store: Store, seed: int, w: int) -> None:
    rng = np.random.default_rng(seed)
    ckpt = store.checkpointer("faults/state")
    i = 0
    while True:
        n = int(rng.integers(1, 100_000))  # inline (<= 256 KiB) or a blob
        value = np.full(n, float(seed * 100_000 + i))
        ckpt.set("offset", value)
        _say(w, f"K offset {float(value[0])!r}")
        i += 1


def w_delete(store: Store, seed: int, w: int) -> None:
    i = 0
    while True:
        mv = store.put("faults/model", {"seed": seed, "i": i, "w": np.arange(1000) * i})
        _say(w, f"V {mv.version} {mv.digest} {seed} {i}")
        with contextlib.suppress(AliasConflictError, NotFoundError):
            store.delete("faults/model", mv.version)
            _say(w, f"D {mv.version}")
        i += 1


def w_gc(store: Store, seed: int, w: int) -> None:
    while True:
        rep = store.gc(grace=0)
        _say(w, f"G {len(rep.deleted_blobs)}")


WORKERS: dict[str, Callable[[Store, int, int], None]] = {
    "put": w_put,
    "alias": w_alias,
    "checkpoint": w_checkpoint,
    "delete": w_delete,
    "gc": w_gc,
}


def _child(backend: Backend, url: str, fault: str, seed: int, ready: Any, w: int) -> None:
    store = backend.open(url)
    ready.set()
    WORKERS[fault](store, seed, w)


def _churn_puts(backend: Backend, url: str, stop: Any) -> None:
    """A second process for the gc class: puts and deletes shared content meanwhile."""
    store = backend.open(url)
    i = 0
    while not stop.is_set():
        mv = store.put("faults/churn", {"c": i % 4, "w": np.arange(20_000) * (i % 4)})
        if i % 2:
            store.delete("faults/churn", mv.version)
        i += 1


def run_kill_class(backend: Backend, fault: str, trials: int, window: float = 0.4) -> Result:
    res = Result(fault=f"kill -9 during {fault}", backend=backend.kind, trials=trials)
    t0 = time.monotonic()
    url = backend.new(fault)
    store = backend.open(url)
    if fault in ("alias", "gc"):
        for i in range(5):
            store.put("faults/model", {"base": i})
        store.set_alias("faults/model", "prod", 1)
    churn, stop = None, None
    if fault == "gc":
        stop = CTX.Event()
        churn = CTX.Process(target=_churn_puts, args=(backend, url, stop))
        churn.start()
    rng = random.Random(1234)
    versions: dict[int, tuple[str, str]] = {}
    payloads: dict[str, int] = {}
    deleted: set[int] = set()
    maybe_deleted: set[int] = set()
    moves: list[int] = []
    ckpt_last: dict[str, float] = {}
    for t in range(trials):
        r, w = os.pipe()
        ready = CTX.Event()
        p = CTX.Process(target=_child, args=(backend, url, fault, t, ready, w))
        p.start()
        os.close(w)
        if not ready.wait(120):
            res.notes.append(f"trial {t}: the worker did not start")
        time.sleep(rng.uniform(0.0, window))
        assert p.pid is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGKILL)
        p.join(60)
        if p.exitcode != -signal.SIGKILL:
            res.notes.append(f"trial {t}: the worker exited with {p.exitcode} before the kill")
        with os.fdopen(r) as f:
            lines = f.read().splitlines()
        if fault == "delete":
            # the last put of a trial may have been deleted with its report cut by the kill
            last = [ln.split() for ln in lines if ln.startswith("V ") and len(ln.split()) == 5]
            if last:
                maybe_deleted.add(int(last[-1][1]))
        for line in lines:
            parts = line.split()
            if not parts or not line.endswith(parts[-1]) or len(parts) < 2:
                continue
            kind = parts[0]
            try:
                if kind == "V" and len(parts) == 5:
                    versions[int(parts[1])] = (parts[2], f"{parts[3]}/{parts[4]}")
                    payloads[f"{parts[3]}/{parts[4]}"] = (
                        payloads.get(f"{parts[3]}/{parts[4]}", 0) + 1
                    )
                    res.operations += 1
                elif kind == "D" and len(parts) == 2:
                    deleted.add(int(parts[1]))
                    res.operations += 1
                elif kind == "A" and len(parts) == 2:
                    moves.append(int(parts[1]))
                    res.operations += 1
                elif kind == "K" and len(parts) == 3:
                    ckpt_last[parts[1]] = float(parts[2])
                    res.operations += 1
                elif kind == "G":
                    res.operations += 1
            except ValueError:
                continue  # a line cut by the kill
    if churn is not None and stop is not None:
        stop.set()
        churn.join(120)
    store = backend.open(url)
    _verify_after_kills(store, res, versions, payloads, deleted, maybe_deleted, moves, ckpt_last)
    _lose_and_recover(backend, url, store, res)
    res.seconds = round(time.monotonic() - t0, 1)
    return res


def _verify_after_kills(
    store: Store,
    res: Result,
    versions: dict[int, tuple[str, str]],
    payloads: dict[str, int],
    deleted: set[int],
    maybe_deleted: set[int],
    moves: list[int],
    ckpt_last: dict[str, float],
) -> None:
    have = (
        {v.version: v for v in store.versions("faults/model")}
        if "faults/model" in store.models()
        else {}
    )
    for v, (digest, _payload) in versions.items():
        if v in deleted:
            if v in have:
                res.lost += 1  # a reported deletion that did not happen
                res.notes.append(f"deleted version {v} is still visible")
            continue
        if v not in have and v in maybe_deleted:
            continue
        if v not in have or have[v].digest != digest:
            res.lost += 1
            res.notes.append(f"version {v} ({digest}) is missing or changed")
    res.duplicated += sum(n - 1 for n in payloads.values() if n > 1)
    for name in store.models():
        for mv in store.versions(name):
            try:
                store.get(name, mv.version)
                if not store.verify(mv.ref).ok:
                    raise ValueError("verify failed")
            except Exception as exc:
                res.torn += 1
                res.notes.append(f"{mv.ref}: {type(exc).__name__}: {exc}")
    if moves:
        cur = store.aliases("faults/model").get("prod")
        # the last reported move, or one that committed after it while its report was cut
        if cur != moves[-1] and cur not in have:
            res.lost += 1
            res.notes.append(f"alias prod is {cur}, last reported move {moves[-1]}")
    if ckpt_last:
        ck = store.checkpointer("faults/state")
        for key in ck:
            try:
                ck.get(key)
            except Exception as exc:
                res.torn += 1
                res.notes.append(f"checkpoint {key}: {type(exc).__name__}: {exc}")
    check = store.check(verify_blobs=False)
    bad = [
        f
        for f in check.findings
        if f.kind not in ("orphan-blob", "orphan-record", "abandoned-upload", "dead-lease")
    ]
    if bad:
        res.notes.append(f"check: {[(f.kind, f.item) for f in bad][:5]}")


def _lose_and_recover(backend: Backend, url: str, store: Store, res: Result) -> None:
    before = snapshot(store)
    lose_catalog(store)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SafepointWarning)
        rebuilt = backend.open(url)
    report = rebuilt.recover()
    diff = compare(before, snapshot(rebuilt))
    res.lost_after_recover += len(diff.lost)
    res.changed_after_recover += len(diff.changed)
    res.extra_after_recover += len(diff.extra)
    for ref in diff.extra:
        if not rebuilt.verify(ref).ok:
            res.torn += 1
    if diff.lost or diff.changed:
        res.notes.append(f"recover: lost {diff.lost[:5]}, changed {diff.changed[:5]}")
    if diff.alias_changes:
        res.notes.append(f"recover: aliases {diff.alias_changes} (a move in flight at a kill)")
    res.notes.append(f"recover: {report.summary()}")


# -- disk full -----------------------------------------------------------------------------
@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def run_disk_full(root: Path, trials: int) -> Result:
    res = Result(fault="disk full (tmpfs)", backend="local", trials=trials)
    t0 = time.monotonic()
    for t in range(trials):
        with _tmpfs(root / f"full{t}", f"{2 + t % 4}m") as fs:
            store = Store(fs / "store")
            rng = np.random.default_rng(t)
            ck = store.checkpointer("faults/state")
            committed: dict[int, str] = {}
            for i in range(60):
                try:
                    mv = store.put(
                        "faults/model", {"i": i, "w": rng.random(int(rng.integers(1, 90_000)))}
                    )
                    committed[mv.version] = mv.digest
                    res.operations += 1
                except SafepointError as exc:
                    _count_error(res, exc, StorageFullError)
                try:
                    ck.set("big", rng.random(int(rng.integers(1, 60_000))))
                    res.operations += 1
                except SafepointError as exc:
                    _count_error(res, exc, StorageFullError)
            have = {v.version: v.digest for v in store.versions("faults/model")}
            res.lost += sum(1 for v, d in committed.items() if have.get(v) != d)
            for v in have:
                try:
                    store.get("faults/model", v)
                except Exception:
                    res.torn += 1
            with contextlib.suppress(Exception):
                ck.get("big")
            store.close()
    res.seconds = round(time.monotonic() - t0, 1)
    return res


def _count_error(res: Result, exc: BaseException, expected: type[BaseException]) -> None:
    name = type(exc).__name__
    res.errors_seen[name] = res.errors_seen.get(name, 0) + 1
    if not isinstance(exc, expected):
        res.bad_errors += 1
        res.notes.append(f"{name}: {exc}")


# -- PostgreSQL sessions terminated --------------------------------------------------------
def run_pg_terminate(backend: Backend, trials: int) -> Result:
    import sqlalchemy as sa

    res = Result(fault="PostgreSQL sessions terminated", backend="postgres", trials=trials)
    t0 = time.monotonic()
    url = backend.new("pgterm")
    app = (backend.metadata or "").rsplit("application_name=", 1)[-1]
    store = backend.open(url)
    killer = sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    committed: dict[int, str] = {}

    def terminate(stop: threading.Event) -> None:
        while not stop.is_set():
            with killer.begin() as c:
                c.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = :a"
                    ),
                    {"a": app},
                )
            time.sleep(0.03)

    for _ in range(trials):
        stop = threading.Event()
        th = threading.Thread(target=terminate, args=(stop,))
        th.start()
        for i in range(20):
            try:
                mv = store.put("faults/model", {"i": i, "w": np.arange(5000) * i})
                committed[mv.version] = mv.digest
                res.operations += 1
            except SafepointError as exc:
                _count_error(res, exc, BackendUnavailableError)
        stop.set()
        th.join()
    killer.dispose()
    have = {v.version: v.digest for v in store.versions("faults/model")}
    res.lost += sum(1 for v, d in committed.items() if have.get(v) != d)
    for v in have:
        try:
            store.get("faults/model", v)
        except Exception:
            res.torn += 1
    _lose_and_recover(backend, url, store, res)
    res.seconds = round(time.monotonic() - t0, 1)
    return res


# -- S3 server killed --------------------------------------------------------------------------
def _big_put(store: Store, out: list[Any]) -> None:
    try:
        out.append(store.put("faults/model", {"w": np.random.rand(3_000_000)}))
    except BaseException as exc:
        out.append(exc)


def run_s3_kill(backend: Backend, trials: int) -> Result:
    res = Result(fault="S3 server killed during a put", backend="s3", trials=trials)
    t0 = time.monotonic()
    rng = random.Random(7)
    waits = []
    for t in range(trials):
        backend.kill_moto()
        url = backend.new(f"s3kill{t}")
        store = backend.open(url)
        store.put("faults/model", {"w": np.arange(10)})
        out: list[Any] = []
        th = threading.Thread(target=_big_put, args=(store, out))
        th.start()
        time.sleep(rng.uniform(0.05, 0.5))
        killed_at = time.monotonic()
        backend.kill_moto()
        th.join(300)
        waits.append(time.monotonic() - killed_at)
        (outcome,) = out
        if isinstance(outcome, BaseException):
            _count_error(res, outcome, BackendUnavailableError)
        else:
            res.operations += 1
        visible = [v.version for v in store.versions("faults/model")]
        expected = [1] if isinstance(outcome, BaseException) else [1, 2]
        if visible != expected:
            res.lost += 1
            res.notes.append(f"trial {t}: visible {visible}, expected {expected}")
    res.notes.append(
        f"error surfaced {min(waits):.1f}-{max(waits):.1f} s after the kill "
        f"(median {sorted(waits)[len(waits) // 2]:.1f} s)"
    )
    res.seconds = round(time.monotonic() - t0, 1)
    return res


# -- main ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--backend", choices=("local", "postgres", "s3"), default="local")
    ap.add_argument("--classes", default="", help="comma-separated fault classes (default: all)")
    ap.add_argument("--trials", default="", help="e.g. put=1000,alias=300 (default: full scale)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument(
        "--window",
        type=float,
        default=0.4,
        help="kill each worker 0..WINDOW s after it is ready (default 0.4)",
    )
    args = ap.parse_args(argv)
    trials = dict(DEFAULT_TRIALS)
    for item in filter(None, args.trials.split(",")):
        k, _, v = item.partition("=")
        trials[k] = int(v)
    classes = [c for c in args.classes.split(",") if c] or [
        c
        for c in DEFAULT_TRIALS
        if c in WORKERS
        or (c == "disk-full" and args.backend == "local")
        or (c == "pg-terminate" and args.backend == "postgres")
        or (c == "s3-kill" and args.backend == "s3")
    ]
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="sp-faults-") as tmp:
        backend = Backend(args.backend, Path(tmp))
        try:
            for c in classes:
                if c in WORKERS:
                    r = run_kill_class(backend, c, trials[c], args.window)
                elif c == "disk-full":
                    r = run_disk_full(Path(tmp), trials[c])
                elif c == "pg-terminate":
                    r = run_pg_terminate(backend, trials[c])
                elif c == "s3-kill":
                    r = run_s3_kill(backend, trials[c])
                else:
                    raise SystemExit(f"unknown class {c!r}")
                results.append(r)
                print(_row(r), flush=True)
        finally:
            backend.close()
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2))
    bad = sum(
        r.lost
        + r.torn
        + r.duplicated
        + r.lost_after_recover
        + r.changed_after_recover
        + r.bad_errors
        for r in results
    )
    print(f"total: {sum(r.trials for r in results)} trials, {bad} problems")
    return 1 if bad else 0


def _row(r: Result) -> str:
    notes = "; ".join(r.notes[-3:])
    return (
        f"{r.fault:<34} {r.backend:<8} trials {r.trials:>5}  ops {r.operations:>6}  "
        f"lost {r.lost}  torn {r.torn}  dup {r.duplicated}  "
        f"recover: lost {r.lost_after_recover} changed {r.changed_after_recover} "
        f"extra {r.extra_after_recover}  bad errors {r.bad_errors} {r.errors_seen or ''}  "
        f"{r.seconds}s  {notes}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
