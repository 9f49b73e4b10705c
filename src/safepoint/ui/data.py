"""What the console shows, read from the store's catalog and from manifests only.

Nothing here loads (deserialises) a model: a version's types, environment,
signature and parameters come from its manifest (``Store.inspect`` reads the
header, footer and manifest), and checkpointer values are shown by their
audit summary.
"""

from __future__ import annotations

import contextlib
import math
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InvalidNameError, SafepointError
from ..format.environment import compare
from ..format.reader import open_reader

if TYPE_CHECKING:
    from ..stores.store import Store

__all__ = [
    "filter_models",
    "fmt",
    "latest_details",
    "manifest_params",
    "metrics_figure",
    "models",
    "rounded",
    "run_outputs",
    "search_results",
    "steps_rows",
]


def fmt(value: Any) -> str:
    """A value as the console prints it: floats to 6 significant digits
    (``0.8600000000000001`` -> ``0.86``), everything else as ``str``.

    >>> fmt(0.8600000000000001), fmt(3), fmt(1e-9), fmt("x"), fmt(None)
    ('0.86', '3', '1e-09', 'x', '—')
    """
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def rounded(value: Any, depth: int = 0) -> Any:
    """``value`` (JSON-like) with floats to 6 significant digits, for display."""
    if isinstance(value, float):
        return float(f"{value:.6g}") if math.isfinite(value) else str(value)
    if depth > 30:
        return value
    if isinstance(value, dict):
        return {k: rounded(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v, depth + 1) for v in value]
    return value


def plot_text(text: Any) -> str:
    """Text for a Plotly label, shown literally: Plotly reads a subset of HTML in labels,
    so ``<``, ``>`` and ``&`` go as entities (it displays them as the characters)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _finite(x: Any) -> Any:
    return x if not isinstance(x, float) or math.isfinite(x) else None


# -- the model list: metrics, tags and filters -------------------------------------------------
def latest_details(store: Store, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The metrics and tags of the latest version of each model in ``names`` (one query)."""
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return {}
    out: dict[str, dict[str, Any]] = {}
    with store.catalog.tx() as conn:
        # the latest version of just these models (an index range per model)
        latest = store.catalog.latest_metrics_and_tags(conn, wanted)
    for name, (metrics, tags) in latest.items():
        out[name] = {
            "metrics": metrics if isinstance(metrics, dict) else {},
            "tags": tags if isinstance(tags, dict) else {},
        }
    return out


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "=": operator.eq,
}
_METRIC_FILTER = re.compile(r"^\s*([^<>=]+?)\s*(>=|<=|>|<|=)\s*(\S+)\s*$")


def metric_filter(text: str) -> Callable[[dict[str, Any]], bool]:
    """``"auc>=0.9"`` (or ``>``, ``<``, ``<=``, ``=``) or a bare ``"auc"`` (has the metric)
    as a test on a metrics dict.

    >>> metric_filter("auc>=0.9")({"auc": 0.93}), metric_filter("auc")({"loss": 1.0})
    (True, False)
    """
    m = _METRIC_FILTER.match(text)
    if m is None:
        name = text.strip()
        if not name or any(c in name for c in "<>="):
            raise InvalidNameError(f"metric filter {text!r}: use NAME, or NAME>=0.9 (> < <= =)")
        return lambda metrics: name in metrics
    name, op, raw = m.groups()
    try:
        bound = float(raw)
    except ValueError:
        raise InvalidNameError(f"metric filter {text!r}: {raw!r} is not a number") from None
    test = _OPS[op]

    def check(metrics: dict[str, Any]) -> bool:
        value = metrics.get(name)
        return isinstance(value, int | float) and test(float(value), bound)

    return check


def filter_models(
    store: Store, rows: list[dict[str, Any]], tag: str = "", metric: str = ""
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Rows whose latest version has ``tag`` (``KEY`` or ``KEY=VALUE``) and passes
    ``metric`` (see :func:`metric_filter`); with the latest versions' details."""
    if not tag and not metric:
        return rows, {}
    details = latest_details(store, [r["name"] for r in rows])
    key, sep, value = tag.partition("=")
    test = metric_filter(metric) if metric else None
    out = []
    for r in rows:
        d = details.get(r["name"], {"metrics": {}, "tags": {}})
        if tag and (key not in d["tags"] or (sep and str(d["tags"][key]) != value)):
            continue
        if test is not None and not test(d["metrics"]):
            continue
        out.append(r)
    return out, details


def models(
    store: Store, q: str = "", sort: str = "updated", show_all: bool = False
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


def manifest_params(store: Store, name: str, version: int) -> dict[str, Any]:
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


def version_view(store: Store, name: str, version: int) -> VersionView:
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


def metrics_figure(versions: list[Any]) -> dict[str, Any] | None:
    """A Plotly figure of each metric over a model's versions (names shown literally)."""
    series: dict[str, tuple[list[int], list[Any]]] = {}
    for mv in sorted(versions, key=lambda v: v.version):
        for k, v in (mv.metrics or {}).items():
            xs, ys = series.setdefault(k, ([], []))
            xs.append(mv.version)
            ys.append(_finite(v))
    if not series:
        return None
    data = [
        {"type": "scatter", "mode": "lines+markers", "name": plot_text(k), "x": xs, "y": ys}
        for k, (xs, ys) in series.items()
    ]
    layout = {
        "xaxis": {"title": {"text": "version"}, "dtick": 1},
        "height": 320,
        "margin": {"t": 30, "b": 40},
    }
    return {"data": data, "layout": layout}


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


def raw_checkpoint(store: Store, ckpt_name: str, key: str) -> bytes | None:
    """The stored bytes of a checkpointer value (inline in the catalog, or its blob)."""
    with store.catalog.tx() as conn:
        row = store.catalog.checkpoint_row(conn, ckpt_name, key)
    if row is None:
        return None
    if row.digest is not None:
        with contextlib.suppress(SafepointError):
            return bytes(store.blobs.read(row.digest))
        return None
    return bytes(row.value) if row.value is not None else None


def checkpointer_keys(store: Store, name: str, limit: int = 500) -> list[dict[str, Any]]:
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


def search_results(store: Store, run: Any) -> dict[str, Any] | None:
    """Per-candidate test scores of a search run, read from its ledger's manifests.

    Candidates are labelled by their parameters (recorded in the run's state by the
    search), best first; the plot shows each candidate's mean and spread over folds.
    """
    state = run.state or {}
    name = state.get("checkpointer")
    if not isinstance(name, str):
        return None
    try:
        keys = store.checkpointer(name).keys()
    except SafepointError:
        return None
    scores: dict[str, list[float]] = {}
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
    if not scores:
        return None
    recorded = state.get("candidate_labels")
    labels: dict[str, str] = recorded if isinstance(recorded, dict) else {}

    def label(cand: str) -> str:
        text = labels.get(cand[:16])
        return str(text) if text is not None else f"candidate {cand[:12]}"

    def mean(c: str) -> float:
        return sum(scores[c]) / len(scores[c])

    cands = sorted(scores, key=lambda c: -mean(c))
    rows = []
    for rank, c in enumerate(cands, 1):
        values = scores[c]
        m = mean(c)
        std = math.sqrt(sum((v - m) ** 2 for v in values) / len(values))
        rows.append({"rank": rank, "label": label(c), "mean": m, "std": std, "fits": len(values)})
    shown = rows[:50]
    texts = [plot_text(r["label"]) for r in shown]
    fig = {
        "data": [
            {
                "type": "scatter",
                "mode": "markers",
                "x": [r["rank"] for r in shown],
                "y": [r["mean"] for r in shown],
                "error_y": {"type": "data", "array": [r["std"] for r in shown], "visible": True},
                "text": texts,
                "hovertemplate": "%{text}<br>mean score %{y:.4f}<extra></extra>",
                "marker": {"size": 9, "color": ["#d62728"] + ["#1f77b4"] * (len(shown) - 1)},
            }
        ],
        "layout": {
            "height": 340,
            "xaxis": _rank_axis(shown, texts),
            # the scores' own range, not from 0: differences between candidates are small
            "yaxis": {
                "title": {"text": "mean test score"},
                "autorange": True,
                "rangemode": "normal",
            },
            "margin": {"t": 30, "b": 50},
            "showlegend": False,
        },
    }
    return {
        "figure": fig,
        "rows": rows[:200],
        "best": rows[0]["label"],
        "best_score": rows[0]["mean"],
        "n_candidates": len(cands),
        "n_fits": sum(len(v) for v in scores.values()),
    }


def _rank_axis(rows: list[dict[str, Any]], texts: list[str]) -> dict[str, Any]:
    """Ranks on the x axis, labelled by parameters while they fit (the table has them all)."""
    if len(rows) > 12:
        return {"title": {"text": "rank (parameters on hover and in the table)"}, "dtick": 1}
    short = [t if len(t) <= 28 else t[:27] + "…" for t in texts]
    return {
        "title": {"text": "candidate, best first"},
        "tickmode": "array",
        "tickvals": [r["rank"] for r in rows],
        "ticktext": short,
        "tickangle": -20 if any(len(t) > 12 for t in short) else 0,
        "automargin": True,
    }


def run_outputs(store: Store, run_id: str) -> list[Any]:
    """The versions a run put in the store (a search's refit model, a workflow's outputs)."""
    try:
        return list(store.find(run_id=run_id))
    except SafepointError:
        return []


def steps_rows(run: Any) -> list[dict[str, Any]]:
    """A steps run's state as table rows: step, what happened, why, its saved output."""
    steps = (run.state or {}).get("steps")
    rows = []
    for s in steps if isinstance(steps, list) else []:
        if not isinstance(s, dict) or not isinstance(s.get("step"), str):
            continue
        version = s.get("version")
        rows.append(
            {
                "step": s["step"],
                "action": str(s.get("action", "")),
                "state": str(s.get("state", "")),
                "why": str(s.get("explanation") or "; ".join(map(str, s.get("reasons") or []))),
                "seconds": s.get("seconds"),
                "version": version if isinstance(version, int) else None,
                "model": f"{run.name}/{s['step']}",
            }
        )
    return rows


def checkpointer_namespaces(store: Store) -> list[dict[str, Any]]:
    """Every checkpointer with its description and number of keys."""
    with store.catalog.tx() as conn:
        rows = store.catalog.list_checkpointers(conn)
    return [
        # "n_keys", not "keys": a template's c.keys would be the dict method
        {"name": r.name, "description": r.description, "n_keys": int(r.n)}
        for r in rows
    ]
