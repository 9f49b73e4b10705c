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

from ..construction import check_callable_value
from ..reader import in_private_memory
from ..registry import register_table_validator, register_validator

#: the node fields the checks read: children (indices into the nodes) and split features
_TREE_FIELDS = ("left_child", "right_child", "feature")

if TYPE_CHECKING:
    from ..decoder import Decoder


def _owned(arr: Any, dec: Decoder, what: str) -> np.ndarray[Any, Any]:
    if not isinstance(arr, np.ndarray):
        raise dec.fail(f"{what} must be an array, not {type(arr).__name__}")
    # a mapped view could change after the check: keep a private copy. Views of
    # memory numpy owns (a row of an object table's column, an aligned read) are
    # private already
    return arr if in_private_memory(arr) else np.array(arr, copy=True)


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
    ):
        raise dec.fail("Tree has inconsistent n_features / n_classes / n_outputs")
    # as Python ints when there are few (there is one per output): a forest checks
    # hundreds of these tiny arrays, and a numpy reduction costs more than the list
    classes = n_classes.tolist() if n_outputs <= 64 else [n_classes.min(), n_classes.max()]
    if min(classes) < 1:
        raise dec.fail("Tree has inconsistent n_features / n_classes / n_outputs")
    max_classes = int(max(classes))
    if not isinstance(state, dict):
        raise dec.fail("Tree state must be a dict")
    nodes = _owned(state.get("nodes"), dec, "Tree.nodes")
    values = _owned(state.get("values"), dec, "Tree.values")
    _fields(nodes, _TREE_FIELDS, dec, "Tree.nodes")
    count = state.get("node_count")
    if not isinstance(count, int) or count != nodes.shape[0]:
        raise dec.fail("Tree.node_count does not match its nodes")
    if count < 1:
        # predict starts at node 0 whatever the count
        raise dec.fail("Tree has no nodes (crafted file?)")
    if values.shape != (count, n_outputs, max_classes):
        raise dec.fail(
            f"Tree.values has shape {values.shape}, expected {(count, n_outputs, max_classes)}"
        )
    fields = nodes.dtype.fields or {}
    if any(fields[f][0].kind not in "iu" for f in _TREE_FIELDS):
        raise dec.fail("Tree.nodes: child and feature fields must be integers")
    # every check below is a few passes over contiguous index arrays (inner nodes
    # only), not boolean gathers over the 64-byte records: a forest has thousands
    # lcf: left children, right children, features
    lcf = _index_rows(nodes)
    parents = (lcf[0] != -1).nonzero()[0]
    # one gather for the three (the ndarray method: np.take's wrapper costs a
    # microsecond a call, and a forest makes thousands)
    inner = lcf.take(parents, axis=1)
    kids = inner[:2]
    # children come after their parent in sklearn's depth-first build: this also
    # rules out cycles that would make predict loop forever. parent < child < count
    # for both children, as one unsigned comparison
    if not ((kids - (parents + 1)).view(np.uintp) < (count - 1 - parents).view(np.uintp)).all():
        raise dec.fail("Tree: a child index points outside the node array (crafted file?)")
    # inner nodes' right children are >= 1 now, so any other -1 belongs to a leaf
    if np.count_nonzero(lcf[1] == -1) != count - parents.size:
        raise dec.fail("Tree: a leaf has a right child")
    if not (inner[2].view(np.uintp) < n_features).all():
        raise dec.fail("Tree: a split feature is out of range (crafted file?)")
    # every node but the root has exactly one parent: a tree, not a graph whose paths
    # multiply (partial dependence walks every path). count - 1 child slots that
    # reach every node but the root (no child is 0, see above) reach each once.
    # up: each node's parent
    up = np.full(count, -1, dtype=np.intp)
    up[kids] = parents
    if kids.size != count - 1 or (count > 1 and up[1:].min() < 0):
        raise dec.fail("Tree: its nodes do not form a tree (crafted file?)")
    # decision_path sizes its output n_samples * (1 + max_depth), unchecked
    max_depth = state.get("max_depth")
    up[0] = 0
    if not isinstance(max_depth, int) or _deeper_than(up, max_depth):
        raise dec.fail("Tree.max_depth is less than the depth of its nodes (crafted file?)")
    return {**state, "nodes": nodes, "values": values}


def _index_rows(nodes: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The nodes' left children, right children and features as three contiguous
    rows of intp (cast as numpy casts: a huge unsigned index wraps around to a value
    the range checks reject as well).

    In scikit-learn's node layout the three are the first three native intp fields
    of each record: one strided copy then reads them all in one pass over the
    records. Any other layout (another version's, a crafted file's) is copied field
    by field.
    """
    word = np.dtype(np.intp)
    size = nodes.dtype.itemsize
    fields = nodes.dtype.fields or {}
    if (
        all(
            fields[f][0] == word and fields[f][1] == i * word.itemsize
            for i, f in enumerate(_TREE_FIELDS)
        )
        and size % word.itemsize == 0
        and nodes.flags.c_contiguous
        and nodes.flags.aligned
    ):
        # the records as rows of words; the first three columns are the fields
        words = nodes.view(np.uint8).view(np.intp).reshape(nodes.shape[0], size // word.itemsize)
        return np.ascontiguousarray(words[:, :3].T)
    out = np.empty((3, nodes.shape[0]), dtype=np.intp)
    for i, f in enumerate(_TREE_FIELDS):
        out[i] = nodes[f]
    return out


def _deeper_than(up: Any, limit: int) -> bool:
    """True if a node lies more than ``limit`` levels below the root, given each
    node's parent (the root its own). The ``limit``-th power of the parent map by
    repeated squaring, log2(limit) vectorised gathers: a deeper node is not yet at
    the root after ``limit`` steps."""
    if limit < 0:
        return True
    if limit >= up.size - 1:
        # no tree of n nodes is deeper than n - 1
        return False
    acc = None
    step = up
    while limit:
        if limit & 1:
            acc = step if acc is None else step.take(acc)
        limit >>= 1
        if limit:
            step = step.take(step)
    if acc is None:
        # limit 0: only a lone root lies within depth 0
        return bool(up.size > 1)
    return bool(acc.any())


_TREE_KEYS = ("max_depth", "node_count", "nodes", "values")


@register_table_validator("sklearn.tree._tree.Tree", replaces=(_tree,))
def _tree_table(columns: dict[str, Any], lengths: dict[str, Any], n: int, dec: Decoder) -> None:
    """Every check of ``_tree``, for all trees of a forest at once.

    The table stores every tree's nodes end to end in one array (and its values
    in another), with each tree's node count: one pass over those arrays checks
    all trees, with child indices local to their tree. A table laid out
    otherwise than safepoint writes it (a crafted one) is checked tree by tree
    by ``_tree`` itself. Failures name the first tree found at fault.
    """
    if n == 0:
        return
    nodes, values = columns.get("nodes"), columns.get("values")
    ncls = columns.get("<arg 1>")
    n_features, n_outputs = columns.get("<arg 0>"), columns.get("<arg 2>")
    if not (
        set(columns) == {*_TREE_KEYS, "<arg 0>", "<arg 1>", "<arg 2>"}
        and type(nodes) is np.ndarray
        and type(values) is np.ndarray
        and type(ncls) is np.ndarray
        and {"nodes", "values", "<arg 1>"} <= set(lengths)
        and all(type(columns[k]) is list for k in ("max_depth", "node_count"))
        and type(n_features) is list
        and type(n_outputs) is list
        and values.ndim == 3
    ):
        _tree_rows(columns, lengths, n, dec)
        return
    # -- constructor arguments: (n_features, n_classes, n_outputs), as in _tree
    odd = min(_not_int(n_features), _not_int(n_outputs))
    if odd < n:
        raise dec.fail(f"Tree needs (n_features, n_classes, n_outputs){_which(odd, n)}")
    feats = _int64s(n_features)
    outs = _int64s(n_outputs)
    cls_len = lengths["<arg 1>"]
    bad = (feats < 0) | (outs < 1) | (cls_len != outs)
    if ncls.ndim != 1 or ncls.dtype.kind not in "iu":
        bad[:] = True
    elif ncls.size:
        owner_c = np.repeat(np.arange(n), cls_len)
        bad |= np.bincount(owner_c[ncls < 1], minlength=n) > 0
    if bad.any():
        raise dec.fail(
            "Tree has inconsistent n_features / n_classes / n_outputs" + _which(bad.argmax(), n)
        )
    # n_outputs >= 1 per tree here: each tree's class counts are a non-empty row
    max_classes = np.maximum.reduceat(ncls, np.cumsum(cls_len) - cls_len).astype(np.int64)
    # -- node arrays
    _fields(nodes, _TREE_FIELDS, dec, "Tree.nodes")
    counts = lengths["nodes"]
    node_count = columns["node_count"]
    odd = _not_int(node_count)
    if odd < n:
        raise dec.fail("Tree.node_count does not match its nodes" + _which(odd, n))
    bad = _int64s(node_count) != counts
    if bad.any():
        raise dec.fail("Tree.node_count does not match its nodes" + _which(bad.argmax(), n))
    if counts.min() < 1:
        raise dec.fail("Tree has no nodes (crafted file?)" + _which(counts.argmin(), n))
    bad = (
        (lengths["values"] != counts) | (outs != values.shape[1]) | (max_classes != values.shape[2])
    )
    if bad.any():
        i = int(bad.argmax())
        expected = (int(counts[i]), int(outs[i]), int(max_classes[i]))
        raise dec.fail(
            f"Tree.values has shape {(int(lengths['values'][i]), *values.shape[1:])}, "
            f"expected {expected}" + _which(i, n)
        )
    if any(nodes.dtype[f].kind not in "iu" for f in _TREE_FIELDS):
        raise dec.fail("Tree.nodes: child and feature fields must be integers")
    # -- structure: the checks of _tree, on indices local to each node's tree. Every
    # pass below is over all nodes or all inner nodes at once; which tree is at fault
    # is worked out only once a check has failed
    total = int(counts.sum())
    ends = np.cumsum(counts)
    starts = ends - counts
    owner = np.repeat(np.arange(n, dtype=np.intp), counts)
    left = nodes["left_child"].astype(np.intp)
    right = nodes["right_child"].astype(np.intp)
    parents = np.flatnonzero(left != -1)
    p_owner = owner[parents]
    p_start = starts[p_owner]
    # children in global positions; modulo 2**64 as in _tree, so a huge index wraps to
    # the same verdict: parent < child < its tree's end, as one unsigned comparison
    kids = np.empty((2, parents.size), dtype=np.intp)
    np.add(left[parents], p_start, out=kids[0])
    np.add(right[parents], p_start, out=kids[1])
    room = (ends[p_owner] - 1 - parents).view(np.uintp)
    out_of_range = (kids - (parents + 1)).view(np.uintp) >= room
    if out_of_range.any():
        raise dec.fail(
            "Tree: a child index points outside the node array (crafted file?)"
            + _which(p_owner[out_of_range.any(axis=0).argmax()], n)
        )
    # inner nodes' right children are in range now (not -1): so, in every tree, -1
    # right children are at most its leaves, and all of them only if each leaf has one
    # (the count over all trees is exact only if it is exact for each)
    right_leaves = right == -1
    if np.count_nonzero(right_leaves) != total - parents.size:
        bad = np.bincount(owner[right_leaves], minlength=n) != counts - np.bincount(
            p_owner, minlength=n
        )
        raise dec.fail("Tree: a leaf has a right child" + _which(bad.argmax(), n))
    feat = nodes["feature"][parents].astype(np.intp)
    bad_feat = feat.view(np.uintp) >= feats[p_owner].astype(np.uintp)
    if bad_feat.any():
        raise dec.fail(
            "Tree: a split feature is out of range (crafted file?)"
            + _which(p_owner[bad_feat.argmax()], n)
        )
    # every node but its tree's root has exactly one parent (see _tree): each tree has
    # count - 1 child slots (parents are sorted: counted per tree by bisection), all
    # inside it and past its root, and they reach every node but the root
    n_parents = np.searchsorted(parents, ends) - np.searchsorted(parents, starts)
    up = np.full(total, -1, dtype=np.intp)
    up[kids[0]] = parents
    up[kids[1]] = parents
    up[starts] = starts
    bad = 2 * n_parents != counts - 1
    orphans = up < 0
    if orphans.any():
        bad[owner[orphans]] = True
    if bad.any():
        raise dec.fail(
            "Tree: its nodes do not form a tree (crafted file?)" + _which(bad.argmax(), n)
        )
    # decision_path sizes its output n_samples * (1 + max_depth), unchecked
    max_depth = columns["max_depth"]
    odd = _not_int(max_depth)
    if odd < n:
        raise dec.fail(
            "Tree.max_depth is less than the depth of its nodes (crafted file?)" + _which(odd, n)
        )
    limits = _int64s(max_depth)
    # no tree of count nodes is deeper than count - 1: depths are needed up to the
    # largest limit that can be exceeded
    reach = int(np.minimum(limits, counts - 1).max())
    deep = _depths_within(up, reach)
    bad = np.maximum.reduceat(deep, starts) > limits if reach >= 0 else counts > 1
    if bad.any():
        raise dec.fail(
            "Tree.max_depth is less than the depth of its nodes (crafted file?)"
            + _which(bad.argmax(), n)
        )


def _which(i: Any, n: int) -> str:
    """Which object of a table a message is about."""
    return f" (tree {int(i)} of {n}, counting from 0)"


def _not_int(values: list[Any]) -> int:
    """The index of the first value that is not an int (as ``_tree`` checks them), or
    ``len(values)``."""
    return next((i for i, v in enumerate(values) if not isinstance(v, int)), len(values))


def _int64s(values: list[int]) -> np.ndarray[Any, Any]:
    """Python ints as int64, clipped to +-2**62 (beyond any count or depth a file
    can have: a clipped value compares as the original would)."""
    lim = 1 << 62
    try:
        out = np.array(values, dtype=np.int64)
    except OverflowError:
        return np.array([min(max(int(v), -lim), lim) for v in values], dtype=np.int64)
    return np.clip(out, -lim, lim, out=out)


def _depths_within(up: np.ndarray[Any, Any], reach: int) -> np.ndarray[Any, Any]:
    """Each node's depth, or ``2**k`` for a node deeper than that, with
    ``2**k > reach`` (given each node's parent, roots their own; parents precede
    their children). Pointer jumping: after j passes each node points 2**j levels
    up (or at its root) and its depth is min(depth, 2**j), so k passes tell every
    depth up to ``reach`` from a deeper one, and no pass is spent on more."""
    # 2**k < 2 * up.size: int32 holds it for up to 2**30 nodes
    depth = (up != np.arange(up.size)).astype(np.int32 if up.size < 2**30 else np.int64)
    if reach < 1:
        return depth
    for _ in range(reach.bit_length()):
        # take: half the time of [] for a gather
        depth += np.take(depth, up)
        up = np.take(up, up)
    return depth


def _tree_rows(columns: dict[str, Any], lengths: dict[str, Any], n: int, dec: Decoder) -> None:
    """A table of Trees laid out otherwise than safepoint writes it: ``_tree`` per tree."""
    bounds = {k: np.concatenate(([0], np.cumsum(c))).tolist() for k, c in lengths.items()}

    def row(key: str, i: int) -> Any:
        col = columns[key]
        return col[bounds[key][i] : bounds[key][i + 1]] if key in bounds else col[i]

    args = sorted(k for k in columns if k.startswith("<arg "))
    state = [k for k in columns if not k.startswith("<arg ")]
    for i in range(n):
        _tree([row(k, i) for k in args], {k: row(k, i) for k in state}, dec)


def _binary_tree(args: list[Any], state: Any, dec: Decoder, n_bounds: int) -> Any:
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
    if not isinstance(n_nodes, int) or n_nodes < 1 or node_data.shape != (n_nodes,):
        raise dec.fail("binary tree n_nodes does not match node_data")
    _fields(node_data, ("idx_start", "idx_end", "is_leaf"), dec, "node_data")
    if idx_array.shape != (n_samples,) or idx_array.dtype.kind not in "iu":
        raise dec.fail("binary tree idx_array does not match its data")
    if n_samples and (idx_array.min() < 0 or idx_array.max() >= n_samples):
        raise dec.fail("binary tree idx_array points outside the data (crafted file?)")
    start, end = node_data["idx_start"], node_data["idx_end"]
    if n_nodes and (start.min() < 0 or end.max() > n_samples or np.any(start > end)):
        raise dec.fail("binary tree node ranges point outside the data (crafted file?)")
    # queries descend from an inner node i to nodes 2i+1 and 2i+2
    branch = np.flatnonzero(node_data["is_leaf"] == 0)
    if branch.size and 2 * int(branch.max()) + 2 >= n_nodes:
        raise dec.fail("binary tree: an inner node has no children in the array (crafted file?)")
    # KD-trees keep (lower, upper) bounds per node, ball trees one centroid
    if node_bounds.shape != (n_bounds, n_nodes, n_features):
        raise dec.fail("binary tree node_bounds do not match its nodes (crafted file?)")
    weights = state[12] if len(state) > 12 else None
    if weights is not None and (
        not isinstance(weights, np.ndarray) or weights.shape != (n_samples,)
    ):
        raise dec.fail("binary tree sample_weight does not match its data (crafted file?)")
    _check_metric(state[11], n_features, dec)
    return (data, idx_array, node_data, node_bounds, *state[4:])


#: the distance metrics a neighbour tree may hold (64- and 32-bit)
_METRICS = tuple(
    f"sklearn.metrics._dist_metrics.{n}Distance{bits}"
    for n in (
        "BrayCurtis",
        "Canberra",
        "Chebyshev",
        "Dice",
        "Euclidean",
        "Hamming",
        "Haversine",
        "Jaccard",
        "Kulsinski",
        "Mahalanobis",
        "Manhattan",
        "Matching",
        "Minkowski",
        "PyFunc",
        "RogersTanimoto",
        "RussellRao",
        "SEuclidean",
        "SokalMichener",
        "SokalSneath",
    )
    for bits in ("64", "32")
)


def _metric_arrays(metric: Any, dec: Decoder) -> tuple[str, Any, Any]:
    """The metric's class name and its (vec, mat) parameters, read from the state it
    was built from (never from the object)."""
    _, state = dec.state_of(metric, *_METRICS, what="a binary tree's distance metric")
    if type(state) is not tuple or len(state) < 3:
        raise dec.fail("a distance metric's state must be (p, vec, mat, ...)")
    vec, mat = state[1], state[2]
    if type(vec) is not np.ndarray or type(mat) is not np.ndarray:
        raise dec.fail("a distance metric's parameters must be arrays")
    return type(metric).__name__, vec, mat


def _check_metric(metric: Any, n_features: int, dec: Decoder) -> None:
    """The metric's parameters are read for every feature, at C speed."""
    name, vec, mat = _metric_arrays(metric, dec)
    if name.startswith("SEuclideanDistance"):
        ok = vec.shape == (n_features,)
    elif name.startswith("MinkowskiDistance"):
        ok = vec.size == 0 or vec.shape == (n_features,)
    elif name.startswith("MahalanobisDistance"):
        ok = mat.shape == (n_features, n_features)
    elif name.startswith("HaversineDistance"):
        ok = n_features == 2
    else:
        ok = True
    if not ok:
        raise dec.fail(
            f"{name}: its parameters do not match the {n_features} features of the data "
            "(crafted file?)"
        )


@register_validator(
    "sklearn.metrics._dist_metrics.PyFuncDistance64",
    "sklearn.metrics._dist_metrics.PyFuncDistance32",
)
def _pyfunc_metric(args: list[Any], state: Any, dec: Decoder) -> Any:
    """A user-defined metric calls its function on pairs of rows: a callable slot."""
    if type(state) is not tuple or len(state) < 5:
        raise dec.fail("PyFuncDistance state must be (p, vec, mat, func, kwargs)")
    check_callable_value(state[3], frozenset(), "PyFuncDistance.func", dec.fail)
    if type(state[4]) is not dict or not all(type(k) is str for k in state[4]):
        raise dec.fail("PyFuncDistance keyword arguments must be a dict of str keys")
    check_callable_value(state[4], frozenset(), "PyFuncDistance keyword arguments", dec.fail)
    return state


register_validator(
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._kd_tree.KDTree64",
    "sklearn.neighbors._kd_tree.KDTree32",
)(lambda args, state, dec: _binary_tree(args, state, dec, 2))
register_validator(
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.neighbors._ball_tree.BallTree64",
    "sklearn.neighbors._ball_tree.BallTree32",
)(lambda args, state, dec: _binary_tree(args, state, dec, 1))


@register_validator(
    "sklearn.metrics._dist_metrics.MahalanobisDistance64",
    "sklearn.metrics._dist_metrics.MahalanobisDistance32",
)
def _mahalanobis(args: list[Any], state: Any, dec: Decoder) -> Any:
    # rdist reads VI[i, j] for i, j < VI.shape[0]: it must be square
    if not isinstance(state, tuple) or len(state) < 3:
        raise dec.fail("MahalanobisDistance state must be (p, vec, mat)")
    mat = np.asarray(state[2])
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1]:
        raise dec.fail("MahalanobisDistance: VI is not a square matrix (crafted file?)")
    return state


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
    if n < 1:
        raise dec.fail("TreePredictor has no nodes (crafted file?)")
    # a gradient-boosting model holds hundreds of small predictors: a few passes over
    # the inner nodes' fields, no per-side or per-key repetition
    parent = np.flatnonzero(nodes["is_leaf"] == 0)
    kids = np.empty((2, parent.size), dtype=np.int64)
    kids[0] = nodes["left"][parent]
    kids[1] = nodes["right"][parent]
    # the grower numbers children after their parent; a back edge would make predict
    # loop forever. parent < child < n for both children, as one unsigned comparison
    if not np.all((kids - (parent + 1)).view(np.uint64) < (n - 1 - parent).view(np.uint64)):
        if kids.min() <= 0 or kids.max() >= n:
            raise dec.fail("TreePredictor: a child index is out of range (crafted file?)")
        raise dec.fail("TreePredictor: a child precedes its parent, a cycle (crafted file?)")
    if parent.size and nodes["feature_idx"][parent].min() < 0:
        raise dec.fail("TreePredictor: a negative feature index (crafted file?)")
    cat = parent[nodes["is_categorical"][parent] != 0]
    top = int(nodes["bitset_idx"][cat].astype(np.int64).max()) if cat.size else -1
    out = {**state, "nodes": nodes}
    for key in ("binned_left_cat_bitsets", "raw_left_cat_bitsets"):
        bits = _owned(state.get(key), dec, key)
        if bits.ndim != 2 or bits.shape[1] != 8:
            raise dec.fail(f"TreePredictor.{key} must have shape (n, 8)")
        if top >= bits.shape[0]:
            raise dec.fail("TreePredictor: a bitset index is out of range (crafted file?)")
        out[key] = bits
    return out


_PREDICTOR = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"
_PREDICTOR_FIELDS = ("left", "right", "is_leaf", "feature_idx", "bitset_idx", "is_categorical")
_BITSETS = ("binned_left_cat_bitsets", "raw_left_cat_bitsets")


@register_table_validator(
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor", replaces=(_hgb_predictor,)
)
def _hgb_predictor_table(
    columns: dict[str, Any], lengths: dict[str, Any], n: int, dec: Decoder
) -> None:
    """Every check of ``_hgb_predictor``, for all predictors of a model at once.

    Each predictor's nodes are a slice of one array; a node's children are
    indices local to its predictor."""
    nodes = columns.get("nodes")
    if not isinstance(nodes, np.ndarray) or "nodes" not in lengths:
        raise dec.fail("TreePredictor.nodes must be an array")
    _fields(nodes, _PREDICTOR_FIELDS, dec, "TreePredictor.nodes")
    counts = lengths["nodes"]
    if n and counts.min() < 1:
        raise dec.fail("TreePredictor has no nodes (crafted file?)")
    starts = np.cumsum(counts) - counts
    inner = np.flatnonzero(nodes["is_leaf"] == 0)
    owner = np.repeat(np.arange(n), counts)[inner]
    local = inner - starts[owner]
    room = (counts[owner] - 1 - local).view(np.uint64)
    for side in ("left", "right"):
        kids = nodes[side][inner].astype(np.int64)
        # parent < child < n, as one unsigned comparison (see _hgb_predictor)
        if not np.all((kids - (local + 1)).view(np.uint64) < room):
            raise dec.fail("TreePredictor: a child index is out of range or precedes its parent")
    if inner.size and nodes["feature_idx"][inner].min() < 0:
        raise dec.fail("TreePredictor: a negative feature index (crafted file?)")
    cat = nodes["is_categorical"][inner] != 0
    used = nodes["bitset_idx"][inner[cat]].astype(np.int64)
    for key in _BITSETS:
        bits = columns.get(key)
        if not isinstance(bits, np.ndarray) or key not in lengths:
            raise dec.fail(f"TreePredictor.{key} must be an array")
        if bits.ndim != 2 or bits.shape[1] != 8:
            raise dec.fail(f"TreePredictor.{key} must have shape (n, 8)")
        if used.size and np.any(used >= lengths[key][owner[cat]]):
            raise dec.fail("TreePredictor: a bitset index is out of range (crafted file?)")


def _hgb_estimator(args: list[Any], state: Any, dec: Decoder) -> Any:
    if not isinstance(state, dict):
        return state
    predictors = state.get("_predictors")
    if predictors is None or (type(predictors) is list and not predictors):
        return state  # not fitted
    # without n_features_in_ scikit-learn would not check the width of X at all
    n_features = _n_features_in(state, dec, "HistGradientBoosting")
    if type(predictors) is not list:
        raise dec.fail("HistGradientBoosting._predictors must be a list of lists")
    categorical = _hgb_categorical(state, n_features, dec)
    all_nodes = []
    for row in predictors:
        if type(row) is not list:
            raise dec.fail("HistGradientBoosting._predictors must be a list of lists")
        for pred in row:
            _, pstate = dec.state_of(pred, _PREDICTOR, what="a HistGradientBoosting predictor")
            nodes = pstate.get("nodes") if type(pstate) is dict else None
            if type(nodes) is not np.ndarray or nodes.dtype.names is None:
                raise dec.fail("HistGradientBoosting holds a predictor without nodes")
            all_nodes.append(nodes)
    # hundreds of predictors: their fields checked together (concatenating whole
    # structured arrays would promote their dtypes one by one, far slower)
    all_nodes = _record_owners(all_nodes, dec)
    if all_nodes:

        def field(name: str) -> Any:
            try:
                return np.concatenate([nodes[name].reshape(-1) for nodes in all_nodes])
            except (KeyError, ValueError):
                raise dec.fail(f"HistGradientBoosting: a predictor's nodes lack {name!r}") from None

        inner = field("is_leaf") == 0
        feat = field("feature_idx")[inner]
        if np.any(feat >= n_features) or np.any(feat < 0):
            raise dec.fail("HistGradientBoosting: a split feature is out of range (crafted file?)")
        # a categorical split indexes the known-categories bitsets, which have a
        # row per categorical feature of the bin mapper only
        cat_feat = feat[field("is_categorical")[inner] != 0]
        if cat_feat.size and not np.all(categorical[cat_feat]):
            raise dec.fail(
                "HistGradientBoosting: a categorical split on a feature that is not "
                "categorical (crafted file?)"
            )
    _hgb_preprocessor(state.get("_preprocessor"), n_features, dec)
    return state


def _record_owners(arrays: list[Any], dec: Decoder) -> list[Any]:
    """Arrays whose records include every record of ``arrays``, fewer of them.

    The predictors of an object table get record-aligned slices of one array
    per column (``Decoder.row_sources``): checking that array once checks them
    all (a superset: it can only refuse more). Any other array stands for itself.
    """
    sources = dec.row_sources
    out: dict[int, Any] = {}
    for a in arrays:
        base = a.base
        if base is not None and sources.get(id(base)) is base:
            out.setdefault(id(base), base)
        else:
            out[id(a)] = a
    return list(out.values())


def _n_features_in(state: dict[str, Any], dec: Decoder, what: str) -> int:
    n = state.get("n_features_in_")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise dec.fail(
            f"{what} lacks a valid n_features_in_: scikit-learn would not check the width "
            "of its input (crafted file?)"
        )
    return n


def _hgb_categorical(state: dict[str, Any], n_features: int, dec: Decoder) -> Any:
    mapper = state.get("_bin_mapper")
    flags = None
    if mapper is not None:
        _, mstate = dec.state_of(
            mapper,
            "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
            what="HistGradientBoosting's bin mapper",
        )
        flags = mstate.get("is_categorical_") if type(mstate) is dict else None
    if flags is None:
        return np.zeros(n_features, dtype=bool)
    if type(flags) is not np.ndarray:
        raise dec.fail("HistGradientBoosting: the bin mapper's flags must be an array")
    if flags.shape != (n_features,) or flags.dtype.kind not in "biu":
        raise dec.fail("HistGradientBoosting: the bin mapper does not match its features")
    return flags != 0


def _hgb_preprocessor(pre: Any, n_features: int, dec: Decoder) -> None:
    """The preprocessor's output is what the predictors index: it must be the one
    HistGradientBoosting builds (categorical columns encoded, the others checked),
    whose width is the input's. A crafted one could drop columns."""
    if pre is None:
        return
    from functools import partial

    from sklearn.utils.validation import check_array

    def fail() -> Exception:
        return dec.fail(
            "HistGradientBoosting: its preprocessor is not the ColumnTransformer it builds "
            "itself (crafted file?)"
        )

    if _qualname(pre) != "sklearn.compose._column_transformer.ColumnTransformer":
        raise fail()
    _, pstate = dec.state_of(pre, "sklearn.compose._column_transformer.ColumnTransformer")
    steps = pstate.get("transformers_") if type(pstate) is dict else None
    if type(steps) is not list:
        raise fail()
    width = 0
    for step in steps:
        if type(step) is not tuple or len(step) != 3:
            raise fail()
        name, trans, cols = step
        if type(name) is not str:
            raise fail()
        if isinstance(cols, list):
            cols = np.asarray(cols, dtype=np.int64) if cols else np.zeros(0, dtype=np.int64)
        if not isinstance(cols, np.ndarray) or cols.ndim != 1 or cols.dtype.kind not in "biu":
            raise fail()
        selected = int(cols.sum()) if cols.dtype.kind == "b" else cols.size
        if cols.dtype.kind == "b" and cols.size != n_features:
            raise fail()
        if (type(trans) is str and trans == "drop") or selected == 0:
            continue
        if name == "encoder" and _qualname(trans) == (
            "sklearn.preprocessing._encoders.OrdinalEncoder"
        ):
            pass
        elif name == "numerical" and _qualname(trans) == (
            "sklearn.preprocessing._function_transformer.FunctionTransformer"
        ):
            _, tstate = dec.state_of(
                trans, "sklearn.preprocessing._function_transformer.FunctionTransformer"
            )
            tstate = tstate if type(tstate) is dict else {}
            func = tstate.get("func")
            if type(func) is partial:
                func = func.func
            if func is not check_array or tstate.get("kw_args"):
                raise fail()
        else:
            raise fail()
        width += selected
    if width != n_features:
        raise fail()


def _qualname(obj: Any) -> str:
    t = type(obj)
    return f"{t.__module__}.{t.__qualname__}"


register_validator(
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingRegressor",
)(_hgb_estimator)


# -- estimators holding trees: the tree must be as wide as the input it is given --------
# A Tree reads X[i, feature] for features < Tree.n_features; the estimator checks X
# against its own n_features_in_, and ensembles call their trees with
# check_input=False. Each must agree with the Tree it holds.
_TREE_ESTIMATORS = tuple(
    f"sklearn.tree._classes.{n}"
    for n in (
        "DecisionTreeClassifier",
        "DecisionTreeRegressor",
        "ExtraTreeClassifier",
        "ExtraTreeRegressor",
    )
)
_TREE_ENSEMBLES = (
    *(
        f"sklearn.ensemble._forest.{n}"
        for n in (
            "RandomForestClassifier",
            "RandomForestRegressor",
            "ExtraTreesClassifier",
            "ExtraTreesRegressor",
            "RandomTreesEmbedding",
        )
    ),
    "sklearn.ensemble._gb.GradientBoostingClassifier",
    "sklearn.ensemble._gb.GradientBoostingRegressor",
    "sklearn.ensemble._iforest.IsolationForest",
)


def _tree_width(tree: Any, dec: Decoder, what: str) -> int:
    """A Tree's n_features, read from the arguments it was built with."""
    args, _ = dec.state_of(tree, "sklearn.tree._tree.Tree", what=f"{what}.tree_")
    if not args or type(args[0]) is not int:
        raise dec.fail(f"{what}.tree_ has no feature count")
    return args[0]


@register_validator(*_TREE_ESTIMATORS)
def _tree_estimator(args: list[Any], state: Any, dec: Decoder) -> Any:
    if not isinstance(state, dict) or state.get("tree_") is None:
        return state  # not fitted
    n = _n_features_in(state, dec, "a decision tree")
    if _tree_width(state["tree_"], dec, "a decision tree") != n:
        raise dec.fail(
            "a decision tree's Tree is wider than the estimator's n_features_in_ (crafted file?)"
        )
    return state


@register_validator(*_TREE_ENSEMBLES)
def _tree_ensemble(args: list[Any], state: Any, dec: Decoder) -> Any:
    if not isinstance(state, dict) or state.get("estimators_") is None:
        return state  # not fitted
    what = "a tree ensemble"
    n = _n_features_in(state, dec, what)
    ests = state["estimators_"]
    if type(ests) is np.ndarray:
        if ests.dtype != object:
            raise dec.fail(f"{what}: estimators_ must hold estimators")
        k = state.get("n_trees_per_iteration_")
        if k is not None and type(k) is not int:
            raise dec.fail(f"{what}: n_trees_per_iteration_ must be an integer")
        # gradient boosting writes tree (i, k)'s output to column k of a
        # (n_samples, n_trees_per_iteration_) array
        if k is not None and (ests.ndim != 2 or ests.shape[1] != k):
            raise dec.fail(
                f"{what}: estimators_ has shape {ests.shape}, not (n, {k}) (crafted file?)"
            )
        flat = ests.ravel().tolist()
    elif type(ests) is list:
        flat = ests
    else:
        raise dec.fail(f"{what}: estimators_ must be a list or an array")
    # bagging-style ensembles give each tree a subset of the columns
    subsets = state.get("estimators_features_", state.get("_estimators_features"))
    if subsets is not None and (type(subsets) is not list or len(subsets) != len(flat)):
        raise dec.fail(f"{what}: estimators_features_ does not match estimators_")
    for i, est in enumerate(flat):
        _, est_state = dec.state_of(est, *_TREE_ESTIMATORS, what=f"{what}: estimator {i}")
        tree = est_state.get("tree_") if type(est_state) is dict else None
        if tree is None:
            raise dec.fail(f"{what}: estimator {i} is not a fitted tree")
        if subsets is None:
            width = n
        elif type(subsets[i]) is np.ndarray and subsets[i].ndim == 1:
            width = subsets[i].size
        else:
            raise dec.fail(f"{what}: estimators_features_ must hold index arrays")
        own = est_state.get("n_features_in_", width)
        if _tree_width(tree, dec, what) != width or type(own) is not int or own != width:
            raise dec.fail(
                f"{what}: tree {i} does not match the width of its input (crafted file?)"
            )
    return state


@register_validator("sklearn.ensemble._gb.GradientBoostingClassifier")
def _gb_classifier(args: list[Any], state: Any, dec: Decoder) -> Any:
    return _gb_outputs(state, dec, classifier=True)


@register_validator("sklearn.ensemble._gb.GradientBoostingRegressor")
def _gb_regressor(args: list[Any], state: Any, dec: Decoder) -> Any:
    return _gb_outputs(state, dec, classifier=False)


_DUMMY_CLASSIFIER = "sklearn.dummy.DummyClassifier"
_DUMMY_REGRESSOR = "sklearn.dummy.DummyRegressor"
_MULTINOMIAL = "sklearn._loss.loss.HalfMultinomialLoss"


def _gb_outputs(state: Any, dec: Decoder, *, classifier: bool) -> Any:
    """predict_stages adds tree (i, k) to column k of the init estimator's raw
    predictions, without bounds checks: their width must be estimators_.shape[1].

    The width is computed from the state alone (nothing of the model runs): with
    ``init_ == "zero"`` it is ``n_trees_per_iteration_``; with the default
    initial estimator (a fitted DummyClassifier / DummyRegressor) it follows from
    its arrays and the loss (one column for regression and binary classification,
    one per class for a multinomial loss). Any other initial estimator's output
    width could only be known by running it: such a file is refused.
    """
    if type(state) is not dict or type(state.get("estimators_")) is not np.ndarray:
        return state
    ests = state["estimators_"]
    if ests.ndim != 2:
        raise dec.fail("gradient boosting: estimators_ must be a 2-D array of trees")
    _n_features_in(state, dec, "gradient boosting")
    init = state.get("init_")
    if type(init) is str:
        if init != "zero":
            raise dec.fail(f"gradient boosting: unknown init_ {init!r} (crafted file?)")
        width = state.get("n_trees_per_iteration_")
        if type(width) is not int:
            raise dec.fail("gradient boosting: n_trees_per_iteration_ must be an integer")
    elif classifier:
        _, dummy = dec.state_of(init, _DUMMY_CLASSIFIER, what="gradient boosting's init_")
        width = _dummy_classifier_width(dummy, _loss_is_multiclass(state, dec), dec)
    else:
        _, dummy = dec.state_of(init, _DUMMY_REGRESSOR, what="gradient boosting's init_")
        constant = dummy.get("constant_") if type(dummy) is dict else None
        n_outputs = dummy.get("n_outputs_") if type(dummy) is dict else None
        if (
            type(n_outputs) is not int
            or n_outputs != 1
            or type(constant) is not np.ndarray
            or constant.size != 1
        ):
            raise dec.fail("gradient boosting: its DummyRegressor is not single-output")
        width = 1
    if width != ests.shape[1]:
        raise dec.fail(
            "gradient boosting: its initial predictions do not have one column per tree of "
            "an iteration (crafted file?)"
        )
    return state


def _loss_is_multiclass(state: dict[str, Any], dec: Decoder) -> bool:
    """``self._loss.is_multiclass`` as scikit-learn will read it at predict: the
    instance attribute if the loss's state has one, else its class's."""
    import inspect

    loss = state.get("_loss")
    if loss is None:
        raise dec.fail("gradient boosting: a fitted model needs its loss")
    _, lstate = dec.state_of(loss, what="gradient boosting's loss")
    value = lstate.get("is_multiclass") if type(lstate) is dict else None
    if value is None:
        value = inspect.getattr_static(type(loss), "is_multiclass", None)
    if type(value) is not bool:
        raise dec.fail("gradient boosting: its loss does not say whether it is multiclass")
    return value


def _dummy_classifier_width(dummy: Any, multiclass: bool, dec: Decoder) -> int:
    """The width of ``predict_proba`` of a fitted single-output DummyClassifier, after
    gradient boosting keeps column 1 (binary) or all columns (multinomial)."""
    if type(dummy) is not dict:
        raise dec.fail("gradient boosting: its DummyClassifier has no state")
    n_classes = dummy.get("n_classes_")
    prior = dummy.get("class_prior_")
    n_outputs = dummy.get("n_outputs_")
    if (
        type(n_outputs) is not int
        or n_outputs != 1
        or type(n_classes) is not int
        or type(prior) is not np.ndarray
        or prior.shape != (n_classes,)
    ):
        raise dec.fail("gradient boosting: its DummyClassifier is not a fitted single-output one")
    if not multiclass:
        if n_classes < 2:
            raise dec.fail("gradient boosting: a binary model's DummyClassifier has one class")
        return 1
    return n_classes


# -- k-means: the centers go to BLAS with the width of X --------------------------------
@register_validator(
    "sklearn.cluster._kmeans.KMeans",
    "sklearn.cluster._kmeans.MiniBatchKMeans",
    "sklearn.cluster._bisect_k_means.BisectingKMeans",
)
def _kmeans(args: list[Any], state: Any, dec: Decoder) -> Any:
    """predict hands cluster_centers_ to compiled code that reads n_features_in_
    columns of each center."""
    if not isinstance(state, dict) or state.get("cluster_centers_") is None:
        return state  # not fitted
    n = _n_features_in(state, dec, "k-means")
    centers = state["cluster_centers_"]
    if not isinstance(centers, np.ndarray) or centers.ndim != 2 or centers.shape[1] != n:
        raise dec.fail("k-means: cluster_centers_ do not match n_features_in_ (crafted file?)")
    # BisectingKMeans predicts down its tree of clusters, each with its own center
    stack = [state.get("_bisecting_tree")]
    seen = 0
    while stack:
        node = stack.pop()
        if node is None:
            continue
        seen += 1
        _, nstate = dec.state_of(
            node, "sklearn.cluster._bisect_k_means._BisectingTree", what="a bisecting k-means node"
        )
        nstate = nstate if type(nstate) is dict else {}
        center = nstate.get("center")
        if seen > 4 * len(centers) + 4 or (
            # a (1, n) numpy.matrix when fitted on sparse data (the mean of a sparse matrix)
            not isinstance(center, np.ndarray) or center.shape not in ((n,), (1, n))
        ):
            raise dec.fail(
                "k-means: a cluster of the bisecting tree does not match (crafted file?)"
            )
        stack += [nstate.get("left"), nstate.get("right")]
    return state
