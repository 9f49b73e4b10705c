"""Scoring with an H2O model: a MOJO (no cluster) or a model in a running H2O cluster.

A stored H2O model is a MOJO inside (the default way H2O models are saved). With a
running H2O cluster it loads into the cluster and is scored there; without one, the
pipeline takes its MOJO out of the file and scores it without a cluster.

A MOJO names its input columns in its ``model.ini`` and gives each categorical
column a domain (its levels): those columns stay text, the others are numbers.
H2O treats a level it never saw in training as missing, as H2O itself does.
A MOJO is scored by H2O's own scorer in a Java process (one per batch: use large
batches).

>>> import io, zipfile
>>> buf = io.BytesIO()
>>> with zipfile.ZipFile(buf, "w") as z:
...     z.writestr("model.ini", "[info]\\nn_features = 2\\nsupervised = true\\n"
...                "[columns]\\nage\\ncity\\ny\\n\\n[domains]\\n1: 3 d000.txt\\n2: 2 d001.txt\\n")
>>> mojo_signature(buf.getvalue())
{'feature_names': ['age', 'city'], 'dtypes': {'age': 'float64', 'city': 'object'}}
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

import numpy as np
import pandas as pd

from ...errors import FormatError
from .frameworks import FrameworkScorer

__all__ = ["H2O_SCORER", "mojo_signature"]


def _ini(text: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
        elif line and current is not None:
            current.append(line)
    return sections


def mojo_signature(data: bytes) -> dict[str, Any]:
    """Input columns of a MOJO (zip bytes), categorical ones as ``object``."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            text = z.read("model.ini").decode("utf-8")
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError) as exc:
        raise FormatError(f"the H2O MOJO has no readable model.ini: {exc}") from None
    ini = _ini(text)
    info = dict(
        (k.strip(), v.strip()) for k, _, v in (line.partition("=") for line in ini.get("info", []))
    )
    columns = ini.get("columns", [])
    try:
        n = int(info.get("n_features", len(columns)))
        categorical = {int(line.split(":", 1)[0]) for line in ini.get("domains", [])}
    except ValueError as exc:
        raise FormatError(f"the H2O MOJO's model.ini is malformed: {exc}") from None
    names = columns[:n]
    return {
        "feature_names": names,
        "dtypes": {c: ("object" if i in categorical else "float64") for i, c in enumerate(names)},
    }


def _is_mojo(model: Any) -> bool:
    from ...adapters.h2o import H2OMojo

    return isinstance(model, H2OMojo)


def _is_cluster_model(model: Any) -> bool:
    try:
        from h2o.model.model_base import ModelBase
    except ImportError:
        return False
    return isinstance(model, ModelBase)


def _cluster_signature(model: Any) -> dict[str, Any]:
    out = model._model_json["output"]
    names = list(out["names"])
    types = list(out.get("column_types") or [])
    domains = list(out.get("domains") or [])  # levels of each categorical column, else None
    response = getattr(model, "actual_params", {}).get("response_column")
    if isinstance(response, dict):
        response = response.get("column_name")
    keep = [i for i, c in enumerate(names) if c != response]

    def categorical(i: int) -> bool:
        return (i < len(domains) and domains[i] is not None) or (
            i < len(types) and types[i] == "Enum"
        )

    return {
        "feature_names": [names[i] for i in keep],
        "dtypes": {names[i]: ("object" if categorical(i) else "float64") for i in keep},
    }


def _signature(model: Any) -> dict[str, Any]:
    if _is_mojo(model):
        return mojo_signature(model.data)
    return _cluster_signature(model)


def _predict(model: Any, frame: pd.DataFrame) -> np.ndarray[Any, Any]:
    if _is_mojo(model):
        scored = model.predict(frame)
    else:
        import h2o

        sig = _cluster_signature(model)
        enums = {c: "enum" for c, t in sig["dtypes"].items() if t == "object" and c in frame}
        scored = model.predict(h2o.H2OFrame(frame, column_types=enums or None)).as_data_frame()
    if len(scored) != len(frame):
        raise ValueError(f"H2O returned {len(scored)} predictions for {len(frame)} records")
    return np.asarray(scored["predict"])


def _mojo_without_cluster(types: list[str], source: Any) -> Any:
    """A stored H2O model when no cluster runs: its MOJO, read from the file's buffers."""
    if not any(t.startswith("h2o.estimators.") for t in types):
        return None
    from ...adapters.h2o import _cluster_up, mojo_from

    if _cluster_up():
        return None  # the usual load: into the running cluster
    return mojo_from(source)


H2O_SCORER = FrameworkScorer(
    "h2o",
    modules=("safepoint.adapters.h2o", "h2o."),
    matches=lambda m: _is_mojo(m) or _is_cluster_model(m),
    predict=_predict,
    signature=_signature,
    stored_types=("h2o.estimators.",),
    load_instead=_mojo_without_cluster,
)
