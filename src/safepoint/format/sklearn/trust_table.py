"""The scikit-learn part of the default trust set: a reviewed list, not a package.

Four tables, each entry with its reason (docs/security.md explains the rules):

* :data:`ESTIMATORS` - the public estimators (``sklearn.utils.all_estimators()``
  of every supported scikit-learn, generated into :mod:`._generated` by
  ``tools/gen_trusted.py``). They are built as ``cls.__new__(cls)`` and given
  their state; their compiled internals are bounds-checked by validators.
* :data:`INTERNAL` - the other types fitted models really hold, found by
  ``tools/trace_model_types.py`` (which fits every estimator in common
  configurations and records every type a saved model names). Each entry says
  which node kinds may build it and why constructing it from data is safe.
* :data:`REVIEWED` - the special methods a trusted class may have that run
  code on an instance: ``__call__``, ``__getattr__``, ``__getattribute__``,
  ``__del__``, ``__setstate__`` (and ``__setattr__``/``__new__``/``__reduce__``
  overrides that construction uses). A trusted class whose MRO defines one of
  them must have that (method, defining class) pair here, with the reason it is
  harmless and the test that shows it; ``tests/format/test_trust_set.py`` fails
  otherwise (a new scikit-learn that adds one fails loudly).
* :data:`RESTRICTED` - types that are not trusted anywhere but in the listed
  attribute of the listed classes (``Bunch``: its attribute access returns
  whatever the file put in it, so anywhere else it could impersonate any object).

Never trusted: anything in ``sklearn.callback`` (its classes open network
connections in ``__setstate__``), ``sklearn.utils._bunch.Bunch`` outside its
slots, test and mocking helpers, dataset loaders, and the compiled machinery of
``fit`` (splitters, criteria, heaps, datasets), whose constructors trust their
arguments and which no fitted model holds.
"""

from __future__ import annotations

from ..registry import (
    register_callable_slots,
    register_restricted,
    register_reviewed,
    register_trust_rule,
)
from ._generated import CALLABLE_SLOTS, ESTIMATORS, FUNCTIONS

__all__ = [
    "CALLABLE_SLOTS",
    "ESTIMATORS",
    "FUNCTIONS",
    "INTERNAL",
    "RESTRICTED",
    "REVIEWED",
    "REVIEWED_DUNDERS",
    "SLOT_INSTANCES",
    "internal_kinds",
    "missing_from_table",
]

# -- reasons shared by families of internal types ----------------------------------------
_COMPILED_LOSS = (
    "compiled loss of linear/boosting models: Cy*(*params) with float parameters; holds "
    "no pointers, computes losses and gradients of arrays it is given"
)
_LOSS = (
    "Python loss object (a compiled loss + a link): plain attributes; __call__ computes a "
    "loss from arrays it is given (REVIEWED)"
)
_LINK = "link function object: no state beyond an Interval of floats; methods compute on arrays"
_SGD_LOSS = (
    "compiled SGD loss: Cls(*params) with float parameters; computes losses of numbers it is given"
)
_METRIC = (
    "compiled distance metric: __setstate__ copies (p, vec, mat) into typed buffers; "
    "the neighbour-tree validator checks their sizes against the data"
)
_BINARY_TREE = (
    "compiled neighbour index: __setstate__ copies typed arrays; the binary-tree "
    "validator bounds-checks every index against the data before it runs"
)
_KERNEL = (
    "Gaussian-process kernel: plain float/array hyper-parameters (or sub-kernels); "
    "__call__ computes a kernel matrix from arrays it is given (REVIEWED)"
)
_SPLITTER = (
    "cross-validation splitter kept as an estimator's cv parameter: integers, a bool "
    "and a random_state; split() only yields index arrays"
)
_SCORER = (
    "scorer kept by searches (scorer_) or given as scoring=: holds a metric function "
    "(a checked callable slot) and keyword arguments; __call__ runs that metric on an "
    "estimator's predictions (REVIEWED)"
)

#: scikit-learn's loss classes (sklearn._loss.loss; their compiled halves are Cy<name>)
LOSSES = (
    "AbsoluteError",
    "ExponentialLoss",
    "HalfBinomialLoss",
    "HalfGammaLoss",
    "HalfMultinomialLoss",
    "HalfPoissonLoss",
    "HalfSquaredError",
    "HalfTweedieLoss",
    "HalfTweedieLossIdentity",
    "HuberLoss",
    "PinballLoss",
)

#: internal type -> (node kinds that may build it, why constructing it from data is safe)
INTERNAL: dict[str, tuple[frozenset[str], str]] = {
    # losses (linear models, gradient boosting, MLP)
    **{f"sklearn._loss._loss.Cy{n}": (frozenset({"red", "pyx"}), _COMPILED_LOSS) for n in LOSSES},
    **{f"sklearn._loss.loss.{n}": (frozenset({"obj"}), _LOSS) for n in LOSSES},
    **{
        f"sklearn._loss.link.{n}": (frozenset({"obj"}), _LINK)
        for n in (
            "HalfLogitLink",
            "IdentityLink",
            "Interval",
            "LogLink",
            "LogitLink",
            "MultinomialLogit",
        )
    },
    **{
        f"sklearn.linear_model._sgd_fast.{n}": (frozenset({"red", "pyx"}), _SGD_LOSS)
        for n in (
            "EpsilonInsensitive",
            "Hinge",
            "ModifiedHuber",
            "SquaredEpsilonInsensitive",
            "SquaredHinge",
            # scikit-learn < 1.6
            "Huber",
            "Log",
            "SquaredLoss",
        )
    },
    # trees
    "sklearn.tree._tree.Tree": (
        frozenset({"red"}),
        "compiled decision tree: Tree(n_features, n_classes, n_outputs) of integers, then "
        "__setstate__ copies node and value arrays that the Tree validator has checked "
        "(children after parents, features in range, depth as recorded)",
    ),
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor": (
        frozenset({"obj"}),
        "histogram-boosting tree: three arrays; the TreePredictor validators bounds-check "
        "children, features and bitset indices; __setstate__ only fixes the node dtype",
    ),
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper": (
        frozenset({"obj"}),
        "bin edges and flags as arrays; its thread count is reset to this machine's",
    ),
    # neighbours
    **{
        f"sklearn.neighbors._kd_tree.{n}": (frozenset({"obj"}), _BINARY_TREE)
        for n in ("KDTree", "KDTree64", "KDTree32")
    },
    **{
        f"sklearn.neighbors._ball_tree.{n}": (frozenset({"obj"}), _BINARY_TREE)
        for n in ("BallTree", "BallTree64", "BallTree32")
    },
    **{
        f"sklearn.metrics._dist_metrics.{n}{bits}": (frozenset({"obj"}), _METRIC)
        for n in (
            "BrayCurtisDistance",
            "CanberraDistance",
            "ChebyshevDistance",
            "DiceDistance",
            "EuclideanDistance",
            "HammingDistance",
            "HaversineDistance",
            "JaccardDistance",
            "MahalanobisDistance",
            "ManhattanDistance",
            "MatchingDistance",
            "MinkowskiDistance",
            "RogersTanimotoDistance",
            "RussellRaoDistance",
            "SEuclideanDistance",
            "SokalMichenerDistance",
            "SokalSneathDistance",
        )
        for bits in ("64", "32")
    },
    **{
        f"sklearn.metrics._dist_metrics.PyFuncDistance{bits}": (
            frozenset({"obj"}),
            "a user-defined metric: its function is a checked callable slot (a function "
            "trusted by name, never an instance); otherwise as the other metrics",
        )
        for bits in ("64", "32")
    },
    # Gaussian processes
    **{
        f"sklearn.gaussian_process.kernels.{n}": (frozenset({"obj"}), _KERNEL)
        for n in (
            "CompoundKernel",
            "ConstantKernel",
            "DotProduct",
            "ExpSineSquared",
            "Exponentiation",
            "Matern",
            "PairwiseKernel",
            "Product",
            "RBF",
            "RationalQuadratic",
            "Sum",
            "WhiteKernel",
        )
    },
    "sklearn.gaussian_process._gpc._BinaryGaussianProcessClassifierLaplace": (
        frozenset({"obj"}),
        "the binary sub-model of GaussianProcessClassifier: an estimator's plain state "
        "(arrays, a kernel)",
    ),
    # calibration, multiclass, clustering, neural networks
    "sklearn.calibration._CalibratedClassifier": (
        frozenset({"obj"}),
        "pairs a fitted classifier with its calibrators: plain attributes",
    ),
    "sklearn.calibration._SigmoidCalibration": (
        frozenset({"obj"}),
        "two floats (a, b) of a sigmoid",
    ),
    "sklearn.calibration._TemperatureScaling": (
        frozenset({"obj"}),
        "one float (the temperature)",
    ),
    "sklearn.multiclass._ConstantPredictor": (
        frozenset({"obj"}),
        "predicts a stored constant array",
    ),
    "sklearn.cluster._birch._CFNode": (
        frozenset({"obj"}),
        "a node of Birch's CF tree: arrays and sub-clusters; the leaf chain is rebuilt "
        "by Birch's validator from an ordered list",
    ),
    "sklearn.cluster._birch._CFSubcluster": (
        frozenset({"obj"}),
        "a CF sub-cluster: counts, sums and a centroid array, a child node",
    ),
    "sklearn.cluster._bisect_k_means._BisectingTree": (
        frozenset({"obj"}),
        "a node of BisectingKMeans' tree: a center array, a label, children; the k-means "
        "validator checks every center's width",
    ),
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer": (
        frozenset({"obj"}),
        "optimizer state of MLP partial_fit: floats and moment arrays",
    ),
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer": (
        frozenset({"obj"}),
        "optimizer state of MLP partial_fit: floats and velocity arrays",
    ),
    # model selection
    **{
        f"sklearn.model_selection._split.{n}": (frozenset({"obj"}), _SPLITTER)
        for n in (
            "GroupKFold",
            "GroupShuffleSplit",
            "KFold",
            "LeaveOneGroupOut",
            "LeaveOneOut",
            "LeavePGroupsOut",
            "LeavePOut",
            "PredefinedSplit",
            "RepeatedKFold",
            "RepeatedStratifiedKFold",
            "ShuffleSplit",
            "StratifiedGroupKFold",
            "StratifiedKFold",
            "StratifiedShuffleSplit",
            "TimeSeriesSplit",
        )
    },
    **{
        f"sklearn.metrics._scorer.{n}": (frozenset({"obj"}), _SCORER)
        for n in ("_Scorer", "_PassthroughScorer", "_CurveScorer", "_MultimetricScorer")
    },
    # scikit-learn 1.5 kept _CurveScorer in model_selection
    "sklearn.model_selection._classification_threshold._CurveScorer": (
        frozenset({"obj"}),
        _SCORER,
    ),
    # metadata routing (set_*_request on an estimator, TunedThresholdClassifierCV)
    "sklearn.utils._metadata_requests.MetadataRequest": (
        frozenset({"obj"}),
        "which metadata each method of an estimator requests: dicts of str -> bool/str; "
        "__getattr__ only composes such requests and raises AttributeError for any "
        "other name (REVIEWED)",
    ),
    "sklearn.utils._metadata_requests.MethodMetadataRequest": (
        frozenset({"obj"}),
        "one method's metadata requests: a dict of str -> bool/str",
    ),
    # restricted: trusted only in the slots of RESTRICTED
    "sklearn.utils._bunch.Bunch": (
        frozenset({"obj"}),
        "a dict whose keys are also attributes; RESTRICTED to Voting/Stacking's "
        "named_estimators_ (anywhere else it could impersonate any object)",
    ),
}

#: restricted type -> the (class, attribute) slots where it may appear. A decoded
#: object of such a type that no listed slot holds is refused at the end of the load.
RESTRICTED: dict[str, frozenset[tuple[str, str]]] = {
    "sklearn.utils._bunch.Bunch": frozenset(
        (f"sklearn.ensemble.{m}.{c}", "named_estimators_")
        for m, c in (
            ("_voting", "VotingClassifier"),
            ("_voting", "VotingRegressor"),
            ("_stacking", "StackingClassifier"),
            ("_stacking", "StackingRegressor"),
        )
    ),
}

#: (special method, the class that defines it) -> (why it is harmless on data from a
#: file, the test that shows it). Construction never calls __call__/__getattr__/__del__;
#: these matter for what a loaded model does later, and for impersonation.
REVIEWED: dict[tuple[str, str], tuple[str, str]] = {
    ("__setstate__", "sklearn.base.BaseEstimator"): (
        "pops _sklearn_version (a warning when it differs), then updates __dict__",
        "tests/format/test_pure_load.py::test_only_reviewed_methods_run_during_a_load",
    ),
    ("__setstate__", "sklearn.isotonic.IsotonicRegression"): (
        "BaseEstimator's, then rebuilds its interpolation function from X_thresholds_ "
        "and y_thresholds_ with scipy (a pure computation); a state entry may not "
        "shadow _build_f (no state key shadows a method)",
        "tests/adversarial/test_gadgets.py::test_state_cannot_shadow_a_method",
    ),
    ("__setstate__", "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"): (
        "BaseEstimator-like update, then casts nodes to the record dtype (same_kind): "
        "nodes is an array the TreePredictor validator checked",
        "tests/format/test_pure_load.py::test_only_reviewed_methods_run_during_a_load",
    ),
    ("__setstate__", "sklearn.tree._tree.Tree"): (
        "compiled: copies validated node/value arrays of the declared sizes",
        "tests/adversarial/test_compiled.py",
    ),
    ("__setstate__", "sklearn.neighbors._kd_tree.BinaryTree64"): (
        "compiled: copies validated index arrays (binary-tree validator)",
        "tests/adversarial/test_compiled.py",
    ),
    ("__setstate__", "sklearn.neighbors._kd_tree.BinaryTree32"): (
        "compiled: copies validated index arrays (binary-tree validator)",
        "tests/adversarial/test_compiled.py",
    ),
    ("__setstate__", "sklearn.neighbors._ball_tree.BinaryTree64"): (
        "compiled: copies validated index arrays (binary-tree validator)",
        "tests/adversarial/test_compiled.py",
    ),
    ("__setstate__", "sklearn.neighbors._ball_tree.BinaryTree32"): (
        "compiled: copies validated index arrays (binary-tree validator)",
        "tests/adversarial/test_compiled.py",
    ),
    ("__setstate__", "sklearn.metrics._dist_metrics.DistanceMetric64"): (
        "compiled: copies (p, vec, mat) into typed buffers (sizes checked by the "
        "neighbour-tree and metric validators); PyFuncDistance's function is a checked "
        "callable slot",
        "tests/adversarial/test_gadgets.py::test_callable_instance_in_a_callable_slot",
    ),
    ("__setstate__", "sklearn.metrics._dist_metrics.DistanceMetric32"): (
        "as DistanceMetric64",
        "tests/adversarial/test_gadgets.py::test_callable_instance_in_a_callable_slot",
    ),
    **{
        ("__setstate__", f"sklearn.metrics._dist_metrics.MahalanobisDistance{bits}"): (
            "compiled: as DistanceMetric's, and recomputes the inverse-covariance view; "
            "VI must be square (Mahalanobis validator)",
            "tests/adversarial/test_compiled.py",
        )
        for bits in ("64", "32")
    },
    ("__setstate__", "sklearn._loss._loss.CyHalfMultinomialLoss"): (
        "compiled (Cython's generated unpickler): sets its typed fields from numbers",
        "tests/format/test_estimators.py",
    ),
    ("__setstate__", "sklearn.utils._bunch.Bunch"): (
        "does nothing (old pickles' __dict__ is dropped); Bunch itself is RESTRICTED",
        "tests/adversarial/test_gadgets.py::test_bunch_outside_its_slot_is_refused",
    ),
    ("__getattr__", "sklearn.utils._bunch.Bunch"): (
        "returns its own items: harmless only where RESTRICTED allows it",
        "tests/adversarial/test_gadgets.py::test_bunch_outside_its_slot_is_refused",
    ),
    ("__setattr__", "sklearn.utils._bunch.Bunch"): (
        "stores into its own items",
        "tests/adversarial/test_gadgets.py::test_bunch_outside_its_slot_is_refused",
    ),
    ("__getattr__", "sklearn.frozen._frozen.FrozenEstimator"): (
        "delegates to its wrapped estimator, itself an audited object",
        "tests/format/test_estimators.py",
    ),
    ("__getattr__", "sklearn.utils._metadata_requests.MetadataRequest"): (
        "answers only the composite method names (fit_transform, fit_predict) by "
        "combining its own requests; any other name raises AttributeError",
        "tests/adversarial/test_gadgets.py::test_reviewed_getattr_classes_do_not_impersonate",
    ),
    ("__call__", "sklearn._loss.loss.BaseLoss"): (
        "computes a mean loss from arrays it is given with its compiled loss",
        "tests/format/test_estimators.py",
    ),
    **{
        ("__call__", f"sklearn.gaussian_process.kernels.{n}"): (
            "computes a kernel matrix from its hyper-parameters and the arrays it is given",
            "tests/format/test_estimators.py",
        )
        for n in (
            "CompoundKernel",
            "ConstantKernel",
            "DotProduct",
            "ExpSineSquared",
            "Exponentiation",
            "Matern",
            "PairwiseKernel",
            "Product",
            "RBF",
            "RationalQuadratic",
            "Sum",
            "WhiteKernel",
        )
    },
    ("__call__", "sklearn.metrics._scorer._BaseScorer"): (
        "calls the estimator it is given for predictions, then its metric function, a "
        "checked callable slot (a trusted function, never an instance)",
        "tests/adversarial/test_gadgets.py::test_callable_instance_in_a_callable_slot",
    ),
    ("__call__", "sklearn.metrics._scorer._PassthroughScorer"): (
        "calls estimator.score on the estimator it is given",
        "tests/format/test_estimators.py",
    ),
    ("__call__", "sklearn.metrics._scorer._MultimetricScorer"): (
        "calls each of its scorers (each audited) on the estimator it is given",
        "tests/format/test_estimators.py",
    ),
    ("__new__", "sklearn.linear_model._passive_aggressive.PassiveAggressiveClassifier"): (
        "scikit-learn's deprecation wrapper: a FutureWarning, then object.__new__(cls)",
        "tests/format/test_estimators.py",
    ),
    ("__new__", "sklearn.linear_model._passive_aggressive.PassiveAggressiveRegressor"): (
        "scikit-learn's deprecation wrapper: a FutureWarning, then object.__new__(cls)",
        "tests/format/test_estimators.py",
    ),
}

#: the special methods REVIEWED covers: a trusted class that defines any of them
#: (anywhere in its MRO but ``object`` and builtin bases such as ``dict``) needs an
#: entry. ``__new__`` counts where it is Python code (a compiled class's ``__new__``
#: is Cython's allocator, covered by the class's own INTERNAL entry).
REVIEWED_DUNDERS = (
    "__call__",
    "__getattr__",
    "__getattribute__",
    "__del__",
    "__setstate__",
    "__setattr__",
    "__new__",
)

#: classes whose *instances* a callable slot may hold (scorers given as scoring=,
#: kept as scorer_), by slot name; every other instance in a callable slot is refused
SLOT_INSTANCES: dict[str, frozenset[str]] = {
    slot: frozenset(
        f"sklearn.metrics._scorer.{n}"
        for n in ("_Scorer", "_PassthroughScorer", "_CurveScorer", "_MultimetricScorer")
    )
    | {"sklearn.model_selection._classification_threshold._CurveScorer"}
    for slot in ("scoring", "scorer_", "_scorer", "_curve_scorer")
}


def internal_kinds(name: str) -> frozenset[str]:
    """The node kinds that may build ``name`` (empty if it is not an internal type)."""
    entry = INTERNAL.get(name)
    return entry[0] if entry is not None else frozenset()


def missing_from_table(found: dict[str, set[str]]) -> list[str]:
    """Names (and kinds) that ``tools/trace_model_types.py`` reached and the trust
    table does not cover: each needs a review and an entry."""
    from ..trust import TrustPolicy

    policy = TrustPolicy()
    out = []
    for name, kinds in sorted(found.items()):
        module, _, qualname = name.rpartition(".")
        for kind in sorted(kinds):
            if not policy.is_trusted(module, qualname, kind):
                out.append(f"{name} ({kind})")
    return out


_KINDS = frozenset({"obj", "red", "pyx", "ref"})


@register_trust_rule
def _trusted(module: str, qualname: str, kind: str) -> bool:
    """The default trust set's scikit-learn part: exactly the tables above."""
    if not (module == "sklearn" or module.startswith("sklearn.")) or kind not in _KINDS:
        return False
    name = f"{module}.{qualname}"
    if kind == "ref":
        return name in FUNCTIONS
    if kind == "obj" and name in ESTIMATORS:
        return True
    return kind in internal_kinds(name)


register_reviewed(REVIEWED)
register_restricted(RESTRICTED)
register_callable_slots(CALLABLE_SLOTS, SLOT_INSTANCES)
