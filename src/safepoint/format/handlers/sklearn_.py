"""Bounds checks for scikit-learn's compiled structures.

scikit-learn's Cython code trusts the arrays inside a tree or a neighbour
index: a child index past the node array, or a sample index past the data,
reads out of bounds at ``predict`` and can crash the interpreter. pickle has
the same hole; safepoint closes it by checking those arrays here, on copies
held in memory (never on memory-mapped pages that could change afterwards).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..validators import register_validator

if TYPE_CHECKING:
    from ..decoder import Decoder


def _owned(arr: Any, dec: Decoder, what: str) -> np.ndarray[Any, Any]:
    if not isinstance(arr, np.ndarray):
        raise dec.fail(f"{what} must be an array, not {type(arr).__name__}")
    # a mapped view could change after the check: keep a private copy
    return arr if arr.flags.owndata and arr.flags.writeable else np.array(arr, copy=True)


def _fields(arr: np.ndarray[Any, Any], names: tuple[str, ...], dec: Decoder, what: str) -> None:
    have = arr.dtype.names or ()
    missing = [n for n in names if n not in have]
    if missing or arr.ndim != 1:
        raise dec.fail(f"{what} lacks fields {missing} or is not 1-D")


@register_validator("sklearn.tree._tree.Tree")
def _tree(args: list[Any], state: Any, dec: Decoder) -> Any:
    if len(args) != 3 or not isinstance(args[0], int) or not isinstance(args[2], int):
        raise dec.fail("Tree needs (n_features, n_classes, n_outputs)")
    n_features, n_classes, n_outputs = args
    n_classes = np.asarray(n_classes)
    if (
        n_features < 0
        or n_outputs < 1
        or n_classes.shape != (n_outputs,)
        or n_classes.dtype.kind not in "iu"
        or (n_classes.size and n_classes.min() < 1)
    ):
        raise dec.fail("Tree has inconsistent n_features / n_classes / n_outputs")
    if not isinstance(state, dict):
        raise dec.fail("Tree state must be a dict")
    nodes = _owned(state.get("nodes"), dec, "Tree.nodes")
    values = _owned(state.get("values"), dec, "Tree.values")
    _fields(nodes, ("left_child", "right_child", "feature"), dec, "Tree.nodes")
    count = state.get("node_count")
    if not isinstance(count, int) or count != nodes.shape[0]:
        raise dec.fail("Tree.node_count does not match its nodes")
    max_classes = int(n_classes.max()) if n_classes.size else 1
    if values.shape != (count, n_outputs, max_classes):
        raise dec.fail(
            f"Tree.values has shape {values.shape}, expected {(count, n_outputs, max_classes)}"
        )
    left = nodes["left_child"]
    right = nodes["right_child"]
    leaf = left == -1
    idx = np.arange(count)
    inner = ~leaf
    if np.any(right[leaf] != -1):
        raise dec.fail("Tree: a leaf has a right child")
    # children come after their parent in sklearn's depth-first build: this also
    # rules out cycles that would make predict loop forever
    if np.any((left[inner] <= idx[inner]) | (left[inner] >= count)) or np.any(
        (right[inner] <= idx[inner]) | (right[inner] >= count)
    ):
        raise dec.fail("Tree: a child index points outside the node array (crafted file?)")
    feat = nodes["feature"][inner]
    if feat.size and (feat.min() < 0 or feat.max() >= n_features):
        raise dec.fail("Tree: a split feature is out of range (crafted file?)")
    return {**state, "nodes": nodes, "values": values}


def _binary_tree(args: list[Any], state: Any, dec: Decoder) -> Any:
    if not isinstance(state, tuple) or len(state) < 12:
        raise dec.fail("binary tree state must be a tuple")
    data = state[0]
    if not isinstance(data, np.ndarray) or data.ndim != 2:
        raise dec.fail("binary tree data must be a 2-D array")
    idx_array = _owned(state[1], dec, "idx_array")
    node_data = _owned(state[2], dec, "node_data")
    node_bounds = _owned(state[3], dec, "node_bounds")
    n_samples, n_features = data.shape
    n_nodes = state[6]
    if not isinstance(n_nodes, int) or node_data.shape != (n_nodes,):
        raise dec.fail("binary tree n_nodes does not match node_data")
    _fields(node_data, ("idx_start", "idx_end", "is_leaf"), dec, "node_data")
    if idx_array.shape != (n_samples,) or idx_array.dtype.kind not in "iu":
        raise dec.fail("binary tree idx_array does not match its data")
    if n_samples and (idx_array.min() < 0 or idx_array.max() >= n_samples):
        raise dec.fail("binary tree idx_array points outside the data (crafted file?)")
    start, end = node_data["idx_start"], node_data["idx_end"]
    if n_nodes and (start.min() < 0 or end.max() > n_samples or np.any(start > end)):
        raise dec.fail("binary tree node ranges point outside the data (crafted file?)")
    if node_bounds.ndim != 3 or node_bounds.shape[1:] != (n_nodes, n_features):
        raise dec.fail("binary tree node_bounds do not match its nodes")
    weights = state[12] if len(state) > 12 else None
    if isinstance(weights, np.ndarray) and weights.shape not in ((n_samples,), (0,)):
        raise dec.fail("binary tree sample_weight does not match its data")
    return (data, idx_array, node_data, node_bounds, *state[4:])


register_validator("sklearn.neighbors._kd_tree.KDTree", "sklearn.neighbors._ball_tree.BallTree")(
    _binary_tree
)


@register_validator("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor")
def _hgb_predictor(args: list[Any], state: Any, dec: Decoder) -> Any:
    if not isinstance(state, dict):
        raise dec.fail("TreePredictor state must be a dict")
    nodes = _owned(state.get("nodes"), dec, "TreePredictor.nodes")
    _fields(
        nodes,
        ("left", "right", "is_leaf", "feature_idx", "bitset_idx", "is_categorical"),
        dec,
        "TreePredictor.nodes",
    )
    n = nodes.shape[0]
    inner = nodes["is_leaf"] == 0
    for side in ("left", "right"):
        child = nodes[side][inner].astype(np.int64)
        if child.size and (child.min() <= 0 or child.max() >= n):
            raise dec.fail("TreePredictor: a child index is out of range (crafted file?)")
    if np.any(nodes["feature_idx"][inner] < 0):
        raise dec.fail("TreePredictor: a negative feature index (crafted file?)")
    out = {**state, "nodes": nodes}
    for key in ("binned_left_cat_bitsets", "raw_left_cat_bitsets"):
        bits = _owned(state.get(key), dec, key)
        if bits.ndim != 2 or bits.shape[1] != 8:
            raise dec.fail(f"TreePredictor.{key} must have shape (n, 8)")
        cat = inner & (nodes["is_categorical"] != 0)
        if np.any(nodes["bitset_idx"][cat].astype(np.int64) >= bits.shape[0]):
            raise dec.fail("TreePredictor: a bitset index is out of range (crafted file?)")
        out[key] = bits
    return out


def _hgb_estimator(args: list[Any], state: Any, dec: Decoder) -> Any:
    if not isinstance(state, dict):
        return state
    n_features = state.get("n_features_in_", state.get("_n_features"))
    predictors = state.get("_predictors") or []
    if not isinstance(n_features, int):
        return state
    for row in predictors:
        for pred in row if isinstance(row, list) else []:
            nodes = getattr(pred, "nodes", None)
            if isinstance(nodes, np.ndarray) and nodes.size:
                inner = nodes["is_leaf"] == 0
                if np.any(nodes["feature_idx"][inner] >= n_features):
                    raise dec.fail(
                        "HistGradientBoosting: a split feature is out of range (crafted file?)"
                    )
    return state


register_validator(
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingRegressor",
)(_hgb_estimator)
