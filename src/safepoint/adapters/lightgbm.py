"""LightGBM: boosters in LightGBM's own text model format, never pickle.

``lightgbm.Booster`` is stored as ``Booster.model_to_string()`` (UTF-8, one buffer) and rebuilt
with ``lightgbm.Booster(model_str=...)``; the scikit-learn wrappers (``LGBMClassifier``,
``LGBMRegressor``, ``LGBMRanker``) store their constructor parameters and fitted attributes
(classes, label encoder, best iteration, ...) through the normal audited encoder::

    >>> sp.dump(lgbm_classifier, "model.sp")         # doctest: +SKIP
    >>> sp.load("model.sp").predict_proba(X)         # doctest: +SKIP

LightGBM's parser and predictor trust the text: a child index out of range crashes ``predict``,
and a malformed tree parsed in its parallel loader aborts the process. So the text is parsed and
checked here first (every tree's links, split features, categorical bounds), the
``tree_sizes`` index is dropped (LightGBM then parses sequentially, where errors are
exceptions), and only then is it handed to LightGBM.
"""

from __future__ import annotations

import collections
import itertools
from typing import TYPE_CHECKING, Any

from ..errors import FormatError
from ._common import adapter_class, import_framework, set_fitted_attributes, type_ref

if TYPE_CHECKING:
    from ..format.decoder import Decoder
    from ..format.encoder import Encoder

__all__ = ["HANDLERS", "booster_from_text", "check_model_text", "rebuild_wrapper"]

_BOOSTER = ("lightgbm.basic.Booster",)
_WRAPPERS = (
    "lightgbm.sklearn.LGBMClassifier",
    "lightgbm.sklearn.LGBMRegressor",
    "lightgbm.sklearn.LGBMRanker",
)
_MAX_LEAVES = 1 << 24


def _lgb() -> Any:
    return import_framework("lightgbm", "lightgbm")


def _int(v: str, what: str) -> int:
    try:
        return int(v)
    except ValueError:
        raise FormatError(f"lightgbm model: {what} is not an integer ({v[:40]!r})") from None


def _ints(tree: dict[str, str], key: str, n: int, where: str) -> list[int]:
    raw = tree.get(key)
    if raw is None:
        raise FormatError(f"lightgbm model: {where} lacks {key}")
    vals = [_int(x, f"{where} {key}") for x in raw.split()] if raw.strip() else []
    if len(vals) != n:
        raise FormatError(f"lightgbm model: {where} {key} has {len(vals)} values, expected {n}")
    return vals


def _floats(tree: dict[str, str], key: str, n: int, where: str) -> None:
    raw = tree.get(key, "")
    try:
        vals = [float(x) for x in raw.split()]
    except ValueError:
        raise FormatError(f"lightgbm model: {where} {key} holds a non-number") from None
    if len(vals) != n:
        raise FormatError(f"lightgbm model: {where} {key} has {len(vals)} values, expected {n}")


def _check_tree(tree: dict[str, str], n_features: int, where: str) -> None:
    leaves = _int(tree.get("num_leaves", ""), f"{where} num_leaves")
    if not 1 <= leaves <= _MAX_LEAVES:
        raise FormatError(f"lightgbm model: {where} has {leaves} leaves")
    n_cat = _int(tree.get("num_cat", "0"), f"{where} num_cat")
    if n_cat < 0:
        raise FormatError(f"lightgbm model: {where} num_cat is negative")
    _floats(tree, "leaf_value", leaves, where)
    inner = leaves - 1
    if inner == 0:
        return
    split = _ints(tree, "split_feature", inner, where)
    left = _ints(tree, "left_child", inner, where)
    right = _ints(tree, "right_child", inner, where)
    dtype = _ints(tree, "decision_type", inner, where)
    _floats(tree, "threshold", inner, where)
    for i, f in enumerate(split):
        if not 0 <= f < n_features:
            raise FormatError(
                f"lightgbm model: {where} node {i} splits on feature {f} of {n_features} "
                "(crafted or corrupt file)"
            )
    # every inner node but the root and every leaf is reached exactly once
    seen_inner = [False] * inner
    seen_leaf = [False] * leaves
    seen_inner[0] = True
    stack = [0]
    while stack:
        i = stack.pop()
        for c in (left[i], right[i]):
            if c >= 0:
                if c >= inner or seen_inner[c]:
                    raise FormatError(
                        f"lightgbm model: {where} node {i} has child {c}: out of range or "
                        "shared (crafted or corrupt file)"
                    )
                seen_inner[c] = True
                stack.append(c)
            else:
                leaf = ~c
                if leaf >= leaves or seen_leaf[leaf]:
                    raise FormatError(
                        f"lightgbm model: {where} node {i} has leaf {leaf}: out of range or shared"
                    )
                seen_leaf[leaf] = True
    if not (all(seen_inner) and all(seen_leaf)):
        raise FormatError(f"lightgbm model: {where} has unreachable nodes")
    if n_cat:
        bounds = _ints(tree, "cat_boundaries", n_cat + 1, where)
        raw = tree.get("cat_threshold", "")
        n_words = len(raw.split())
        if (
            bounds[0] != 0
            or bounds[-1] != n_words
            or any(a > b for a, b in itertools.pairwise(bounds))
        ):
            raise FormatError(f"lightgbm model: {where} categorical bounds are inconsistent")
    thresholds = tree.get("threshold", "").split()
    for i, d in enumerate(dtype):
        if d & 1:  # a categorical split: its threshold indexes cat_boundaries
            try:
                k = int(float(thresholds[i]))
            except ValueError:
                raise FormatError(f"lightgbm model: {where} bad categorical threshold") from None
            if not 0 <= k < n_cat:
                raise FormatError(f"lightgbm model: {where} node {i} categorical index {k}")
    if tree.get("is_linear", "0").strip() not in ("", "0"):
        counts = _ints(tree, "num_features", leaves, where)
        feats = tree.get("leaf_features", "").split()
        if len(feats) != sum(counts) or any(not 0 <= _int(x, where) < n_features for x in feats):
            raise FormatError(f"lightgbm model: {where} linear leaf features out of range")


def check_model_text(text: str) -> str:
    """Validate a LightGBM text model; returns it without its ``tree_sizes`` index.

    Raises :class:`~safepoint.FormatError` naming the first problem.
    """
    lines = text.split("\n")
    if not lines or lines[0].strip() != "tree":
        raise FormatError("lightgbm model: the text does not start with 'tree'")
    header: dict[str, str] = {}
    i = 1
    while i < len(lines) and not lines[i].startswith("Tree="):
        if lines[i].strip() == "end of trees":
            break
        k, sep, v = lines[i].partition("=")
        if sep:
            header[k.strip()] = v
        i += 1
    n_features = _int(header.get("max_feature_idx", ""), "max_feature_idx") + 1
    if n_features < 1:
        raise FormatError("lightgbm model: max_feature_idx is negative")
    n_trees = 0
    while i < len(lines) and lines[i].startswith("Tree="):
        where = f"tree {n_trees}"
        tree: dict[str, str] = {}
        i += 1
        while i < len(lines) and lines[i].strip():
            k, sep, v = lines[i].partition("=")
            if not sep:
                raise FormatError(f"lightgbm model: {where} has a line without '='")
            tree[k.strip()] = v
            i += 1
        _check_tree(tree, n_features, where)
        n_trees += 1
        while i < len(lines) and not lines[i].strip():
            i += 1
    if i >= len(lines) or lines[i].strip() != "end of trees":
        raise FormatError("lightgbm model: the trees do not end with 'end of trees'")
    return "\n".join(line for line in lines if not line.startswith("tree_sizes="))


def _load_booster(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError("lightgbm model: the stored text is not UTF-8") from None
    text = check_model_text(text)
    lgb = _lgb()
    try:
        return lgb.Booster(model_str=text)
    except lgb.basic.LightGBMError as exc:
        raise FormatError(f"LightGBM refused the stored model: {exc}") from None


def booster_from_text(text: Any, best_iteration: Any = 0) -> Any:
    """A Booster from the model text a pickled ``lightgbm.Booster`` holds (its
    ``_handle``), checked as a stored one is; ``best_iteration`` kept when positive."""
    if not isinstance(text, str):
        raise FormatError(
            f"lightgbm model: a pickled Booster holds {type(text).__name__}, not its model text"
        )
    booster = _load_booster(text.encode("utf-8", "surrogatepass"))
    if type(best_iteration) is int and best_iteration > 0:
        booster.best_iteration = best_iteration
    return booster


def rebuild_wrapper(
    cls: type, params: dict[str, Any], attrs: dict[str, Any], booster: Any, dec: Any
) -> Any:
    """``cls(**params)`` with its booster and fitted attributes (load and import share it);
    ``dec`` is anything with ``fail(msg) -> Exception``."""
    est = cls(**params)
    if booster is None:
        return est
    if type(booster) is not _lgb().Booster:
        raise dec.fail("a lightgbm wrapper must hold a lightgbm Booster")
    if isinstance(attrs, dict) and isinstance(attrs.get("_best_score"), dict):
        best: dict[str, Any] = collections.defaultdict(collections.OrderedDict)
        for k, v in attrs["_best_score"].items():
            best[k] = collections.OrderedDict(v if isinstance(v, dict) else {})
        attrs = {**attrs, "_best_score": best}
    set_fitted_attributes(est, attrs, dec, cls.__name__)
    est._Booster = booster
    return est


class BoosterHandler:
    """``lightgbm.Booster`` <-> its text model."""

    @staticmethod
    def encode(obj: Any, enc: Encoder) -> dict[str, Any]:
        text = obj.model_to_string(num_iteration=-1)
        node = {"t": type_ref(enc, obj), "fmt": "text", "b": enc.buffer(text.encode("utf-8"))}
        # predict() defaults to the best iteration of early stopping, which the text lacks
        best = getattr(obj, "best_iteration", 0)
        if isinstance(best, int) and best > 0:
            node["bi"] = best
        return node

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        adapter_class(node, dec, _BOOSTER)
        if node.get("fmt") != "text":
            raise dec.fail("unknown lightgbm model format")
        booster = _load_booster(dec.raw(dec.field(node, "b", int)))
        if "bi" in node:
            booster.best_iteration = dec.field(node, "bi", int)
        return booster


def _plain(v: Any) -> Any:
    """defaultdict(OrderedDict) (``_best_score``) as nested plain dicts: no factory stored."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


class SklearnHandler:
    """The scikit-learn wrappers: params and fitted attributes (audited encoder) + booster."""

    @staticmethod
    def encode(obj: Any, enc: Encoder) -> dict[str, Any]:
        params = obj.get_params(deep=False)
        node: dict[str, Any] = {"t": type_ref(enc, obj), "p": enc.encode_child(params, ".params")}
        booster = getattr(obj, "_Booster", None)
        if booster is not None:
            node["b"] = enc.encode_child(booster, "._Booster")
            extra = {
                k: (_plain(v) if k == "_best_score" else v)
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
            raise dec.fail("lightgbm params must be a dict with str keys")
        if "b" not in node:
            return rebuild_wrapper(cls, params, {}, None, dec)
        booster = dec.decode(node["b"])
        attrs = dec.decode(node["a"]) if "a" in node else {}
        return rebuild_wrapper(cls, params, attrs, booster, dec)


HANDLERS = {"lightgbm.booster": BoosterHandler, "lightgbm.sklearn": SklearnHandler}
