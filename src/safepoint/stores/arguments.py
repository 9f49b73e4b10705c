"""Checks of the store's arguments: every bad value gets an error naming the argument.

Each function returns the value in the form the catalog stores, or raises a
:class:`~safepoint.SafepointError` subclass (``SerializationError`` for values that
cannot be recorded, ``InvalidNameError`` for names and versions,
``InvalidArgumentError`` for the rest) before anything is written.

>>> from safepoint.stores.arguments import metrics_arg, count_arg
>>> metrics_arg({"auc": 0.9})
{'auc': 0.9}
>>> count_arg(3, "keep_last")
3
>>> count_arg(1.5, "keep_last")
Traceback (most recent call last):
...
safepoint.errors.InvalidArgumentError: keep_last must be a whole number >= 0, not 1.5
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from typing import Any

from ..errors import InvalidArgumentError, SerializationError
from .names import check_run_id

__all__ = [
    "MAX_DEPTH",
    "MODEL_KINDS",
    "count_arg",
    "digest_arg",
    "json_dict_arg",
    "keep_best_arg",
    "kind_arg",
    "metrics_arg",
    "names_arg",
    "parents_arg",
    "run_id_arg",
    "seconds_arg",
    "tags_arg",
    "text_arg",
]

#: how deeply metadata may nest (JSON of any depth would not round-trip everywhere)
MAX_DEPTH = 64
#: at most this many characters of a description
MAX_TEXT = 10_000


def _depth(value: Any, limit: int) -> int:
    """The nesting depth of dicts and lists in ``value``, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, dict | list | tuple):
            deepest = max(deepest, d)
            if deepest > limit:
                return deepest
            children = node.values() if isinstance(node, dict) else node
            stack.extend((c, d + 1) for c in children)
    return deepest


def json_dict_arg(value: Any, what: str) -> dict[str, Any]:
    """A JSON-serialisable dict with str keys, nested at most :data:`MAX_DEPTH` deep."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise SerializationError(f"{what} must be a dict with str keys, not {type(value).__name__}")
    if _depth(value, MAX_DEPTH) > MAX_DEPTH:
        raise SerializationError(f"{what} nests deeper than {MAX_DEPTH} levels; flatten it")
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError, RecursionError) as exc:
        raise SerializationError(f"{what} must be JSON-serializable: {exc}") from None
    return dict(value)


def metrics_arg(value: Any, what: str = "metrics") -> dict[str, float]:
    """``{name: float}``."""
    out: dict[str, float] = {}
    for k, v in json_dict_arg(value, what).items():
        if isinstance(v, bool | str) or v is None:
            raise SerializationError(f"metric {k!r} must be a number, not {v!r}")
        try:
            out[k] = float(v)
        except (TypeError, ValueError, OverflowError):
            raise SerializationError(f"metric {k!r} must be a number, not {v!r}") from None
    return out


def tags_arg(value: Any, what: str = "tags") -> dict[str, str]:
    """``{tag: value}`` from a dict, a str or an iterable of str."""
    if value is None:
        return {}
    if isinstance(value, dict):
        out = {str(k): str(v) for k, v in value.items()}
    elif isinstance(value, str):
        out = {value: ""}
    elif isinstance(value, Iterable) and not isinstance(value, bytes | bytearray):
        out = {}
        for t in value:
            if not isinstance(t, str | int | float):
                raise SerializationError(f"{what} must hold str tags, not {type(t).__name__}")
            out[str(t)] = ""
    else:
        raise SerializationError(
            f"{what} must be a dict of str -> str or a list of str, not {type(value).__name__}"
        )
    if any(not k or "\x00" in k or "\x00" in v for k, v in out.items()):
        raise SerializationError(f"{what}: tags must be non-empty strings without NUL")
    return out


def parents_arg(value: Any, what: str = "parents") -> list[str]:
    """Model references (``"name@3"``), run ids or objects with a ``ref`` (a ModelVersion)."""
    if value is None:
        return []
    if isinstance(value, str) or hasattr(value, "ref"):
        value = [value]
    if not isinstance(value, Iterable) or isinstance(value, bytes | bytearray | dict):
        raise SerializationError(
            f"{what} must be a list of model references ('name@3'), run ids or ModelVersions, "
            f"not {type(value).__name__}"
        )
    out = []
    for p in value:
        ref = getattr(p, "ref", None)
        if isinstance(ref, str):
            out.append(ref)
        elif isinstance(p, str) and p and len(p) <= 300 and "\x00" not in p:
            out.append(p)
        else:
            raise SerializationError(
                f"{what} must be model references ('name@3'), run ids or ModelVersions, not {p!r}"[
                    :300
                ]
            )
    return out


def run_id_arg(value: Any, what: str = "run_id") -> str | None:
    """The id of a run given as a ``Run``/``RunInfo`` or a str (lineage: which run made it)."""
    if value is None:
        return None
    if not isinstance(value, str):
        rid = getattr(value, "id", None)
        if not isinstance(rid, str):
            raise SerializationError(
                f"{what} must be a run id (str) or a Run, not {type(value).__name__}"
            )
        value = rid
    return check_run_id(value, what)


def digest_arg(value: Any, what: str) -> str | None:
    """A data or code digest: a str of at most 128 characters, or bytes (hashed)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return hashlib.sha256(value).hexdigest()
    if not isinstance(value, str) or not value or len(value) > 128 or "\x00" in value:
        raise SerializationError(
            f"{what} must be a str of 1-128 characters without NUL (or bytes, hashed)"
        )
    return value


def text_arg(value: Any, what: str) -> str:
    """A free text (a description): a str of at most 10,000 characters without NUL."""
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > MAX_TEXT or "\x00" in value:
        raise InvalidArgumentError(
            f"{what} must be a str of at most {MAX_TEXT} characters without NUL"
        )
    return value


def count_arg(value: Any, what: str, minimum: int = 0, maximum: int = 2**31 - 1) -> int:
    """A whole number in ``minimum`` ... ``maximum`` (an int, never a float truncated)."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise InvalidArgumentError(f"{what} must be a whole number >= {minimum}, not {value!r}")
    n = int(value.__index__())
    if not minimum <= n <= maximum:
        raise InvalidArgumentError(
            f"{what} must be a whole number from {minimum} to {maximum}, not {n}"
        )
    return n


def seconds_arg(value: Any, what: str) -> float:
    """A finite number of seconds >= 0."""
    if isinstance(value, bool) or (
        not isinstance(value, int | float) and not hasattr(value, "__float__")
    ):
        raise InvalidArgumentError(f"{what} must be a number of seconds >= 0, not {value!r}")
    try:
        s = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidArgumentError(
            f"{what} must be a number of seconds >= 0, not {value!r}"
        ) from None
    if not math.isfinite(s) or s < 0:
        raise InvalidArgumentError(f"{what} must be a number of seconds >= 0, not {value!r}")
    return s


def keep_best_arg(value: Any) -> tuple[str, str, int] | None:
    """``("metric", "max"|"min")`` or ``("metric", "max"|"min", k)`` with k >= 1."""
    if value is None:
        return None
    if (
        isinstance(value, tuple | list)
        and len(value) in (2, 3)
        and isinstance(value[0], str)
        and value[0]
        and value[1] in ("max", "min")
    ):
        k = count_arg(value[2], "keep_best's k", 1) if len(value) == 3 else 1
        return (value[0], value[1], k)
    raise InvalidArgumentError(
        f"keep_best must be ('metric', 'max'|'min') or ('metric', 'max'|'min', k), not {value!r}"
    )


#: kinds of models: put by users, or outputs of step workflows
MODEL_KINDS = ("model", "step")


def kind_arg(kind: Any) -> str:
    """A model kind (:data:`MODEL_KINDS`)."""
    if kind not in MODEL_KINDS:
        raise InvalidArgumentError(f"kind must be one of {', '.join(MODEL_KINDS)}, not {kind!r}")
    return str(kind)


def names_arg(value: Any, what: str) -> set[str]:
    """A name or a list of names (metrics or tags to remove)."""
    if isinstance(value, str):
        return {value}
    if not isinstance(value, Iterable) or not all(isinstance(v, str) for v in value):
        raise InvalidArgumentError(f"{what} must be a list of str names")
    return set(value)
