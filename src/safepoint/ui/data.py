"""What the console shows, read from the store's catalog and from manifests only.

Nothing here loads (deserialises) a model: a version's types, environment,
signature and parameters come from its manifest (``Store.inspect`` reads the
header, footer and manifest), and checkpointer values are shown by their
audit summary.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

from ..errors import SafepointError
from ..format.environment import compare
from ..format.reader import open_reader

__all__ = ["manifest_params", "metrics_figure", "models", "search_results"]


def models(
    store: Any, q: str = "", sort: str = "updated", show_all: bool = False
) -> list[dict[str, Any]]:
    """Rows of the model list; outputs of step workflows only with ``show_all``."""
    rows = store.summary(kind=None if show_all else "model")
    if q:
        needle = q.lower()
        rows = [r for r in rows if needle in r["name"].lower()]
    if sort == "name":
        rows.sort(key=lambda r: r["name"])
    else:
        rows.sort(key=lambda r: r["updated"], reverse=True)
    return list(rows)


def _scalar(node: Any) -> bool:
    return node is None or isinstance(node, bool | int | float | str)


def manifest_params(store: Any, name: str, version: int) -> dict[str, Any]:
    """The root estimator's scalar parameters as recorded in the manifest (no load).

    For a Pipeline the parameters of each step are listed as ``step__param``.
    """
    out: dict[str, Any] = {}
    with store.open_blob(name, version) as src, contextlib.closing(open_reader(src)) as reader:
        types = reader.types
        shared = reader.manifest_shared

        def deref(node: Any) -> Any:
            if isinstance(node, dict) and node.get("@") == "memo":
                i = node.get("i")
                if isinstance(i, int) and 0 <= i < len(shared):
                    return shared[i]
            return node

        def state(node: Any) -> dict[str, Any]:
            node = deref(node)
            if not isinstance(node, dict) or node.get("@") not in ("obj", "red"):
                return {}
            s = deref(node.get("s"))
            return s.get("s", {}) if isinstance(s, dict) and isinstance(s.get("s"), dict) else {}

        def collect(node: Any, prefix: str, depth: int) -> None:
            st = state(node)
            for key, value in st.items():
                if key.endswith("_") or key.startswith("_"):
                    continue  # fitted attributes and private state are not parameters
                value = deref(value)
                if _scalar(value):
                    out[prefix + key] = value
                elif isinstance(value, dict) and value.get("@") == "ref":
                    t = value.get("t")
                    if isinstance(t, int) and 0 <= t < len(types):
                        out[prefix + key] = f"{types[t][0]}.{types[t][1]}"
                elif key == "steps" and depth < 3 and isinstance(value, dict):
                    for step in value.get("v", []):
                        step = deref(step)
                        if isinstance(step, dict) and step.get("@") == "tuple":
                            pair = step.get("v", [])
                            if len(pair) == 2 and isinstance(pair[0], str):
                                collect(pair[1], f"{prefix}{pair[0]}__", depth + 1)
                elif depth < 3 and isinstance(value, dict) and value.get("@") == "obj":
                    collect(value, f"{prefix}{key}__", depth + 1)

        collect(reader.manifest.get("root"), "", 0)
    return out


@dataclass
class VersionView:
    mv: Any
    inspection: Any
    env_rows: list[tuple[str, str, str | None, bool]]
    lineage: dict[str, Any]
    verify: dict[str, Any] | None
    params: dict[str, Any]


def version_view(store: Any, name: str, version: int) -> VersionView:
    mv = store.info(name, version)
    info = store.inspect(f"{name}@{mv.version}")
    diffs = compare(info.environment)
    env = info.environment or {}
    rows: list[tuple[str, str, str | None, bool]] = [
        ("Python", str(env.get("python", "?")), None, any(d.startswith("Python") for d in diffs))
    ]
    for pkg, v in sorted((env.get("packages") or {}).items()):
        here = next((d for d in diffs if d.startswith(f"{pkg} ")), None)
        rows.append((pkg, str(v), here, here is not None))
    try:
        params = manifest_params(store, name, mv.version)
    except SafepointError:
        params = {}
    last = getattr(store, "last_verify", None)
    verify = last(name, mv.version) if callable(last) else None
    return VersionView(mv, info, rows, store.lineage(name, mv.version), verify, params)


def metrics_figure(versions: list[Any]) -> str | None:
    """A plotly figure (JSON) of each metric over a model's versions."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for mv in sorted(versions, key=lambda v: v.version):
        for k, v in (mv.metrics or {}).items():
            xs, ys = series.setdefault(k, ([], []))
            xs.append(mv.version)
            ys.append(v)
    if not series:
        return None
    data = [
        {"type": "scatter", "mode": "lines+markers", "name": k, "x": xs, "y": ys}
        for k, (xs, ys) in series.items()
    ]
    layout = {
        "title": {"text": "metrics by version"},
        "xaxis": {"title": {"text": "version"}, "dtick": 1},
        "height": 320,
        "margin": {"t": 40, "b": 40},
    }
    return json.dumps({"data": data, "layout": layout})


def _plain(node: Any, reader: Any, depth: int = 0) -> Any:
    """A manifest node as plain data, if it is plain (scalars, dicts, lists, numpy
    scalars of numeric dtype); ``...`` for anything else. Nothing is constructed."""
    import numpy as np

    if depth > 20:
        return ...
    if node is None or isinstance(node, bool | int | float | str):
        return node
    if not isinstance(node, dict):
        return ...
    tag = node.get("@")
    if tag == "memo":
        i = node.get("i")
        shared = reader.manifest_shared
        return (
            _plain(shared[i], reader, depth + 1)
            if isinstance(i, int) and 0 <= i < len(shared)
            else ...
        )
    if tag == "dict" and isinstance(node.get("s"), dict):
        return {k: _plain(v, reader, depth + 1) for k, v in node["s"].items()}
    if tag in ("list", "tuple") and isinstance(node.get("v"), list):
        return [_plain(v, reader, depth + 1) for v in node["v"]]
    if tag == "npsc" and isinstance(node.get("d"), str) and isinstance(node.get("h"), str):
        dt = node["d"]
        if dt in ("<f8", "<f4", "<i8", "<i4", "|b1") and len(node["h"]) <= 16:
            with contextlib.suppress(ValueError, TypeError):
                return np.frombuffer(bytes.fromhex(node["h"]), dtype=dt)[0].item()
    return ...


def raw_checkpoint(store: Any, ckpt_name: str, key: str) -> bytes | None:
    """The stored bytes of a checkpointer value (inline in the catalog, or its blob)."""
    import sqlalchemy as sa

    from ..stores.catalog import T_CKPT

    with store.catalog.tx() as conn:
        row = conn.execute(
            sa.select(T_CKPT.c.kind, T_CKPT.c.digest, T_CKPT.c.value).where(
                T_CKPT.c.name == ckpt_name, T_CKPT.c.key == key
            )
        ).first()
    if row is None:
        return None
    if row.digest is not None:
        with contextlib.suppress(SafepointError):
            return bytes(store.blobs.read(row.digest))
        return None
    return bytes(row.value) if row.value is not None else None


def checkpointer_keys(store: Any, name: str, limit: int = 500) -> list[dict[str, Any]]:
    """Keys of a checkpointer with an audit summary of each value (manifest only)."""
    import safepoint as sp

    ckpt = store.checkpointer(name)
    out = []
    for key in sorted(ckpt.keys())[:limit]:
        info = ckpt.info(key)
        row: dict[str, Any] = {
            "key": key,
            "kind": info["kind"],
            "size": info["size"],
            "updated_at": info["updated_at"],
            "root_type": "bytes",
            "types": [],
            "untrusted": [],
        }
        if info["kind"] != "bytes":
            raw = raw_checkpoint(store, name, key)
            try:
                insp = sp.inspect(raw) if raw is not None else None
            except SafepointError as exc:
                row["root_type"] = f"unreadable: {exc}"
            else:
                if insp is not None:
                    row["root_type"] = insp.root_type
                    row["types"] = [t["name"] for t in insp.types]
                    row["untrusted"] = insp.untrusted
        out.append(row)
    return out


def search_results(store: Any, run: Any) -> dict[str, Any] | None:
    """Per-candidate mean test scores of a search run, read from its ledger's manifests."""
    name = (run.state or {}).get("checkpointer")
    if not isinstance(name, str):
        return None
    try:
        keys = store.checkpointer(name).keys()
    except SafepointError:
        return None
    scores: dict[str, list[float]] = {}
    labels: dict[str, str] = {}
    for key in keys:
        if not key.startswith("search/") or key == "search/meta":
            continue
        raw = raw_checkpoint(store, name, key)
        if raw is None:
            continue
        try:
            with contextlib.closing(open_reader(raw)) as reader:
                value = _plain(reader.manifest.get("root"), reader)
        except SafepointError:
            continue
        fits = value.get("fits") if isinstance(value, dict) else None
        for fit in fits if isinstance(fits, list) else []:
            if not isinstance(fit, dict) or not isinstance(fit.get("r"), dict):
                continue
            cand, result = fit.get("c"), fit["r"]
            score = result.get("test_scores")
            if isinstance(score, dict):
                score = next((v for v in score.values() if isinstance(v, float)), None)
            if isinstance(cand, str) and isinstance(score, int | float) and score == score:
                scores.setdefault(cand, []).append(float(score))
                params = result.get("parameters")
                if isinstance(params, dict):
                    labels[cand] = ", ".join(
                        f"{k}={'<object>' if v is ... else v}" for k, v in params.items()
                    )[:160]
    if not scores:
        return None
    cands = sorted(scores, key=lambda c: -sum(scores[c]) / len(scores[c]))
    means = [sum(scores[c]) / len(scores[c]) for c in cands]
    text = [labels.get(c, c[:12]) for c in cands]
    fig = {
        "data": [
            {
                "type": "bar",
                "x": list(range(1, len(cands) + 1)),
                "y": means,
                "text": text,
                "hovertemplate": "%{text}<br>score %{y:.4f}<extra></extra>",
                "marker": {"color": ["#d62728"] + ["#1f77b4"] * (len(cands) - 1)},
            }
        ],
        "layout": {
            "title": {"text": "mean test score per candidate, best first (red)"},
            "height": 320,
            "xaxis": {"title": {"text": "rank"}},
            "margin": {"t": 40, "b": 40},
        },
    }
    return {
        "figure": json.dumps(fig),
        "best": text[0],
        "best_score": means[0],
        "n_candidates": len(cands),
        "n_fits": sum(len(v) for v in scores.values()),
    }


def checkpointer_namespaces(store: Any) -> list[dict[str, Any]]:
    """Every checkpointer with its description and number of keys."""
    import sqlalchemy as sa

    from ..stores.catalog import T_CKPT, T_CKPTS

    with store.catalog.tx() as conn:
        counts = dict(
            conn.execute(sa.select(T_CKPT.c.name, sa.func.count()).group_by(T_CKPT.c.name)).all()
        )
        rows = conn.execute(sa.select(T_CKPTS).order_by(T_CKPTS.c.name)).all()
    return [
        {"name": r.name, "description": r.description, "keys": int(counts.get(r.name, 0))}
        for r in rows
    ]
