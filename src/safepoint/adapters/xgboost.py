"""XGBoost: boosters in XGBoost's own UBJSON model format, never pickle.

``xgboost.Booster`` is stored as the bytes of ``Booster.save_raw("ubj")`` (one buffer) and
rebuilt with ``Booster.load_model``; the scikit-learn wrappers (``XGBClassifier``,
``XGBRegressor``, ``XGBRanker``, ``XGBRF*``) store their constructor parameters through the
normal (audited) encoder next to the booster. Nothing else is needed::

    >>> import safepoint as sp                       # doctest: +SKIP
    >>> sp.dump(xgb_classifier, "model.sp")          # doctest: +SKIP
    >>> sp.load("model.sp").predict(X)               # doctest: +SKIP

XGBoost's loader parses the model, but its predictor trusts the tree arrays: a crafted split
feature index makes ``predict`` read out of bounds (seen: a segmentation fault). So every tree is
checked after the load, from the booster's own JSON dump, before the booster is returned.

``sp.convert`` imports pickled boosters and wrappers through the same loader: a pickled
``Booster`` holds XGBoost's memory snapshot (``{"Config": ..., "Model": ...}`` in UBJSON, or
JSON), whose ``Model`` is cut out (:func:`booster_from_snapshot`) and loaded as above; the
configuration (training parameters) is not read.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..errors import FormatError
from ._common import adapter_class, import_framework, set_fitted_attributes, type_ref
from ._ubjson import member_span

if TYPE_CHECKING:
    from ..format.decoder import Decoder
    from ..format.encoder import Encoder

__all__ = ["HANDLERS", "booster_from_snapshot", "rebuild_wrapper", "validate_model_json"]

_BOOSTER = ("xgboost.core.Booster",)
_WRAPPERS = (
    "xgboost.sklearn.XGBClassifier",
    "xgboost.sklearn.XGBRegressor",
    "xgboost.sklearn.XGBRanker",
    "xgboost.sklearn.XGBRFClassifier",
    "xgboost.sklearn.XGBRFRegressor",
)


def _xgb() -> Any:
    return import_framework("xgboost", "xgboost")


# -- validation ---------------------------------------------------------------------------
def _ints(tree: dict[str, Any], key: str, n: int, where: str) -> list[int]:
    v = tree.get(key)
    if not isinstance(v, list) or len(v) != n or not all(type(x) is int for x in v):
        raise FormatError(f"xgboost model: {where} field {key!r} is not {n} integers")
    return v


def _check_tree(tree: Any, num_feature: int, where: str) -> None:
    if not isinstance(tree, dict):
        raise FormatError(f"xgboost model: {where} is not an object")
    param = tree.get("tree_param", {})
    try:
        n = int(param["num_nodes"])
    except (KeyError, TypeError, ValueError):
        raise FormatError(f"xgboost model: {where} lacks tree_param.num_nodes") from None
    if n < 1:
        raise FormatError(f"xgboost model: {where} has {n} nodes")
    left = _ints(tree, "left_children", n, where)
    right = _ints(tree, "right_children", n, where)
    split = _ints(tree, "split_indices", n, where)
    seen = [False] * n
    stack = [0]
    seen[0] = True
    while stack:
        i = stack.pop()
        lc, rc = left[i], right[i]
        if (lc == -1) != (rc == -1):
            raise FormatError(f"xgboost model: {where} node {i} has one child")
        if lc == -1:
            continue
        if not 0 <= split[i] < num_feature:
            raise FormatError(
                f"xgboost model: {where} node {i} splits on feature {split[i]} of "
                f"{num_feature} (crafted or corrupt file)"
            )
        for c in (lc, rc):
            if not 0 < c < n or seen[c]:
                raise FormatError(
                    f"xgboost model: {where} node {i} has child {c}: out of range or shared "
                    "(crafted or corrupt file)"
                )
            seen[c] = True
            stack.append(c)
    cat_nodes = tree.get("categories_nodes") or []
    if cat_nodes:
        segs = tree.get("categories_segments") or []
        sizes = tree.get("categories_sizes") or []
        cats = tree.get("categories") or []
        if not (len(cat_nodes) == len(segs) == len(sizes)):
            raise FormatError(f"xgboost model: {where} categorical arrays differ in length")
        for node, seg, size in zip(cat_nodes, segs, sizes, strict=True):
            if not (
                type(node) is int
                and 0 <= node < n
                and type(seg) is int
                and type(size) is int
                and seg >= 0
                and size >= 0
                and seg + size <= len(cats)
            ):
                raise FormatError(f"xgboost model: {where} categorical split out of range")


def validate_model_json(model: dict[str, Any]) -> None:
    """Check the structure XGBoost's predictor trusts (tree links, split features).

    Raises :class:`~safepoint.FormatError` naming the first problem.
    """
    try:
        learner = model["learner"]
        num_feature = int(learner["learner_model_param"]["num_feature"])
        gb = learner["gradient_booster"]
    except (KeyError, TypeError, ValueError):
        raise FormatError("xgboost model: no learner parameters (not an XGBoost model)") from None
    name = gb.get("name") if isinstance(gb, dict) else None
    if name == "gblinear":
        return  # a weight vector: its length is checked by XGBoost's own loader
    inner = gb.get("gbtree", gb) if name == "dart" else gb
    trees = inner.get("model", {}).get("trees") if isinstance(inner, dict) else None
    if name not in ("gbtree", "dart") or not isinstance(trees, list):
        raise FormatError(f"xgboost model: unknown booster {name!r}; refused")
    if num_feature < 0:
        raise FormatError("xgboost model: negative num_feature")
    for i, tree in enumerate(trees):
        _check_tree(tree, num_feature, f"tree {i}")


# -- handlers -----------------------------------------------------------------------------
def _load_booster(raw: bytes) -> Any:
    xgb = _xgb()
    booster = xgb.Booster()
    try:
        booster.load_model(bytearray(raw))
    except xgb.core.XGBoostError as exc:
        raise FormatError(f"XGBoost refused the stored model: {str(exc).splitlines()[0]}") from None
    validate_model_json(json.loads(bytes(booster.save_raw(raw_format="json"))))
    return booster


def booster_from_snapshot(snapshot: Any) -> Any:
    """A Booster from the bytes a pickled ``xgboost.Booster`` holds (its ``handle``).

    Only the ``Model`` member of the snapshot is loaded (through XGBoost's model loader
    and the tree checks above); its ``Config`` is not read.
    """
    if not isinstance(snapshot, bytes | bytearray | memoryview):
        raise FormatError(
            f"xgboost model: a pickled Booster holds {type(snapshot).__name__}, not bytes"
        )
    raw = bytes(snapshot)
    if raw.lstrip()[:2] == b'{"':  # a JSON snapshot
        try:
            doc = json.loads(raw)
            model = json.dumps(doc["Model"]).encode()
        except (ValueError, KeyError, TypeError, RecursionError):
            raise FormatError("xgboost model: the pickled JSON snapshot has no model") from None
    elif raw[:1] == b"{":
        start, end = member_span(raw, "Model")
        model = raw[start:end]
    else:
        raise FormatError(
            "xgboost model: the pickled Booster is in a format safepoint does not read (an "
            "xgboost release older than 1.6?): load it where you trust it and save it with "
            "sp.dump or Booster.save_model"
        )
    return _load_booster(model)


def rebuild_wrapper(
    cls: type, params: dict[str, Any], attrs: dict[str, Any], booster: Any, dec: Any
) -> Any:
    """``cls(**params)`` with its booster and fitted attributes (load and import share it);
    ``dec`` is anything with ``fail(msg) -> Exception``."""
    est = cls(**params)
    if booster is not None:
        if type(booster) is not _xgb().Booster:
            raise dec.fail("an xgboost wrapper must hold an xgboost Booster")
        est._Booster = booster
        set_fitted_attributes(est, attrs, dec, cls.__name__)
    return est


class BoosterHandler:
    """``xgboost.Booster`` <-> its UBJSON bytes."""

    @staticmethod
    def encode(obj: Any, enc: Encoder) -> dict[str, Any]:
        return {"t": type_ref(enc, obj), "fmt": "ubj", "b": enc.buffer(obj.save_raw("ubj"))}

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        adapter_class(node, dec, _BOOSTER)
        if node.get("fmt") not in ("ubj", "json"):
            raise dec.fail("unknown xgboost model format")
        return _load_booster(dec.raw(dec.field(node, "b", int)))


class SklearnHandler:
    """The scikit-learn wrappers: params (audited encoder) + booster + fitted extras."""

    @staticmethod
    def encode(obj: Any, enc: Encoder) -> dict[str, Any]:
        node: dict[str, Any] = {
            "t": type_ref(enc, obj),
            "p": enc.encode_child(obj.get_params(deep=False), ".get_params()"),
        }
        booster = getattr(obj, "_Booster", None)
        if booster is not None:
            node["b"] = enc.encode_child(booster, "._Booster")
            params = obj.get_params(deep=False)
            extra = {
                k: v
                for k, v in vars(obj).items()
                if k != "_Booster" and k not in params and not k.startswith("__")
            }
            node["a"] = enc.encode_child(extra, ".<fitted attributes>")
        return node

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        cls = adapter_class(node, dec, _WRAPPERS)
        params = dec.decode(node.get("p"))
        if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
            raise dec.fail("xgboost params must be a dict with str keys")
        if "b" not in node:
            return rebuild_wrapper(cls, params, {}, None, dec)
        booster = dec.decode(node["b"])
        attrs = dec.decode(node["a"]) if "a" in node else {}
        return rebuild_wrapper(cls, params, attrs, booster, dec)


HANDLERS = {"xgboost.booster": BoosterHandler, "xgboost.sklearn": SklearnHandler}
