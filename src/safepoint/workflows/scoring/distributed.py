"""Scale a scoring job out on a Dask cluster.

The input (a folder or a list of files) is partitioned by file; each partition
runs the same pipeline on a worker and commits into its own sub-folder of the
output with the same exactly-once protocol, so a rerun after a crash (of a
worker or of the whole cluster) redoes only uncommitted batches. The model is
loaded once per worker process from the store and kept there::

    from distributed import Client, LocalCluster
    with Client(LocalCluster(n_workers=2)) as client:
        report = score_on_dask(client, "demo/clf@production", ".safepoint",
                               "inbox/", "predictions/", schema="id: Int! @key, prediction: Float!")
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import NotFoundError
from .sources import FORMATS

if TYPE_CHECKING:
    from ...stores.store import Store

__all__ = ["DistributedReport", "score_on_dask"]

# (store url, model ref) -> handle; one per worker process
_HANDLES: dict[tuple[str, str], Any] = {}
_LOCK = threading.Lock()


def _handle(store_url: str, ref: str, trusted: tuple[str, ...]) -> tuple[Any, bool]:
    from .model import open_model

    key = (store_url, ref)
    with _LOCK:
        handle = _HANDLES.get(key)
        if handle is not None:
            return handle, False
        handle = open_model(ref, store=store_url, trusted=trusted)
        _HANDLES[key] = handle
        return handle, True


def _score_partition(
    store_url: str,
    ref: str,
    src: str,
    out: str,
    schema: str | None,
    batch_size: int,
    on_error: str,
    trusted: tuple[str, ...],
) -> dict[str, Any]:
    from .pipeline import ScoringPipeline

    handle, loaded = _handle(store_url, ref, trusted)
    p = ScoringPipeline(
        handle,
        batch_size=batch_size,
        on_error=on_error,
        quiet=True,
        name=f"score:{ref}:{Path(src).name}",
    )
    p.write(p.apply(p.read(src)), out, schema=schema)
    r = p.run()
    return {
        "source": src,
        "read": r.read,
        "written": r.written,
        "bad": r.bad,
        "duplicates": r.duplicates,
        "versions": r.versions,
        "loaded_model": loaded,
        "worker": os.getpid(),
    }


@dataclass
class DistributedReport:
    read: int = 0
    written: int = 0
    bad: int = 0
    duplicates: int = 0
    partitions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def model_loads(self) -> int:
        """How many times a worker loaded the model (once per worker process)."""
        return sum(1 for p in self.partitions if p["loaded_model"])


def _inputs(inputs: Any) -> list[str]:
    if isinstance(inputs, str | os.PathLike) and os.path.isdir(inputs):
        folder = os.fspath(inputs)
        files = [
            os.path.join(folder, f)
            for f in sorted(os.listdir(folder))
            if not f.startswith(".") and Path(f).suffix.lower() in FORMATS
        ]
    elif isinstance(inputs, str | os.PathLike):
        files = [os.fspath(inputs)]
    else:
        files = [os.fspath(f) for f in inputs]
    for f in files:
        if not os.path.isfile(f):
            raise NotFoundError(f"input file {f!r} does not exist")
    return files


def score_on_dask(
    client: Any,
    model: str,
    store: Store,
    inputs: Any,
    output: str | os.PathLike[str],
    *,
    schema: str | None = None,
    batch_size: int = 10_000,
    on_error: str = "dead_letter",
    trusted: tuple[str, ...] = (),
) -> DistributedReport:
    """Score every input file on the cluster; outputs go to ``output/<file stem>/``.

    ``store`` must be reachable from every worker (a shared folder, or S3 with a
    PostgreSQL catalog); ``model`` is ``NAME[@ALIAS|@VERSION]``.
    """
    store_url = store if isinstance(store, str) else getattr(store, "url", None)
    if not isinstance(store_url, str):
        raise NotFoundError("score_on_dask needs a store URL or Store that workers can open")
    files = _inputs(inputs)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    futures = [
        client.submit(
            _score_partition,
            store_url,
            model,
            f,
            str(out / Path(f).stem),
            schema,
            batch_size,
            on_error,
            tuple(trusted),
            pure=False,
        )
        for f in files
    ]
    report = DistributedReport()
    for part in client.gather(futures):
        report.partitions.append(part)
        report.read += part["read"]
        report.written += part["written"]
        report.bad += part["bad"]
        report.duplicates += part["duplicates"]
    return report
