"""The default trust set: complete for scikit-learn's estimators, a reviewed list of
the internal types fitted models hold (each with a reason), and free of anything
that reads files, runs processes, reaches the interpreter or impersonates objects.

A new scikit-learn that adds an estimator makes ``test_every_estimator_is_trusted``
fail loudly: regenerate the list with ``python tools/gen_trusted.py``. One that
makes fitted models hold a new internal type fails ``test_traced_types_are_in_the_table``
(``python tools/trace_model_types.py`` names it); one that gives a trusted class a
``__call__``, ``__getattr__``, ``__setstate__``, ... fails
``test_special_methods_of_trusted_classes_are_reviewed``.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.utils import all_estimators

import safepoint as sp
from safepoint.format.sklearn import trust_table as sklearn_trust
from safepoint.format.trust import _BUILTIN_TYPES, _NUMPY_FUNCTIONS, TrustPolicy

ROOT = Path(__file__).resolve().parents[2]

KINDS = ("obj", "red", "pyx", "ref")

#: (module, qualname) pairs that must never be trusted, whatever the node kind
DANGEROUS = [
    ("os", "system"),
    ("os", "popen"),
    ("os", "remove"),
    ("os", "execv"),
    ("posix", "system"),
    ("nt", "system"),
    ("subprocess", "Popen"),
    ("subprocess", "run"),
    ("subprocess", "call"),
    ("subprocess", "check_output"),
    ("shutil", "rmtree"),
    ("builtins", "eval"),
    ("builtins", "exec"),
    ("builtins", "compile"),
    ("builtins", "getattr"),
    ("builtins", "setattr"),
    ("builtins", "delattr"),
    ("builtins", "open"),
    ("builtins", "__import__"),
    ("builtins", "globals"),
    ("builtins", "vars"),
    ("builtins", "input"),
    ("builtins", "breakpoint"),
    ("builtins", "type"),
    ("importlib", "import_module"),
    ("pickle", "loads"),
    ("pickle", "load"),
    ("_pickle", "loads"),
    ("marshal", "loads"),
    ("joblib", "load"),
    ("joblib.numpy_pickle", "load"),
    ("io", "open"),
    ("codecs", "open"),
    ("pathlib", "Path"),
    ("tempfile", "mkstemp"),
    ("ctypes", "CDLL"),
    ("runpy", "run_path"),
    ("sys", "exit"),
    ("operator", "attrgetter"),
    ("operator", "methodcaller"),
    ("functools", "partial"),
    ("numpy", "load"),
    ("numpy", "save"),
    ("numpy", "savez"),
    ("numpy", "fromfile"),
    ("numpy", "loadtxt"),
    ("numpy", "savetxt"),
    ("numpy", "genfromtxt"),
    ("numpy", "memmap"),
    ("numpy", "fromregex"),
    ("numpy", "ctypeslib"),
    ("numpy.lib.npyio", "load"),
    ("numpy.lib._npyio_impl", "load"),
    ("scipy.io", "loadmat"),
    ("scipy.io", "savemat"),
    ("sklearn.base", "os.system"),  # reached through another module's namespace
    ("sklearn.utils", "os.system"),
    ("sklearn.datasets", "fetch_openml"),
    ("sklearn.datasets._openml", "fetch_openml"),
    ("sklearn.datasets._svmlight_format_io", "load_svmlight_file"),
    ("sklearn.datasets._svmlight_format_io", "dump_svmlight_file"),
    ("sklearn.datasets._base", "get_data_home"),
    ("sklearn.datasets._base", "clear_data_home"),
    ("sklearn.utils._show_versions", "show_versions"),
    ("sklearn.utils._testing", "TempMemmap"),
    ("sklearn.utils._testing", "create_memmap_backed_data"),
    ("sklearn.externals._arff", "load"),
    ("sklearn.tree._export", "export_graphviz"),
    ("sklearn.utils.fixes", "tarfile_extractall"),
    # gadgets: impersonation, callable instances, network connections in __setstate__
    ("sklearn.utils._bunch", "Bunch.__getattr__"),
    ("sklearn.linear_model._glm._newton_solver", "_LbfgsCallbackBridge"),
    ("sklearn.linear_model._linear_loss", "_LbfgsCallbackBridge"),
    ("sklearn.callback._callback_context", "CallbackContext"),
    ("sklearn.callback._scoring_monitor", "ScoringMonitor"),
    ("sklearn.callback._scoring_monitor", "ScoringMonitorLog"),
    ("sklearn.callback._transport", "ListenerHandle"),
    ("sklearn.callback._progressbar", "ProgressBar"),
    ("sklearn.utils.parallel", "_FuncWrapper"),
    ("sklearn.utils._testing", "MinimalClassifier"),
    ("sklearn.utils._mocking", "CheckingClassifier"),
]


@pytest.fixture(scope="module")
def policy() -> TrustPolicy:
    return TrustPolicy()


def _resolve(name: str) -> Any:
    """The object a dotted name denotes in the installed packages, or None."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                return None
        return obj
    return None


def test_every_estimator_is_trusted(policy: TrustPolicy) -> None:
    missing = [
        f"{cls.__module__}.{cls.__qualname__}"
        for _, cls in all_estimators()
        if not policy.is_trusted(cls.__module__, cls.__qualname__, "obj")
    ]
    assert not missing, (
        f"estimators of scikit-learn {__import__('sklearn').__version__} missing from the "
        f"default trust set: {missing}. Run `python tools/gen_trusted.py`."
    )


@pytest.mark.parametrize(("module", "qualname"), DANGEROUS)
def test_dangerous_callables_are_never_trusted(
    policy: TrustPolicy, module: str, qualname: str
) -> None:
    for kind in KINDS:
        assert not policy.is_trusted(module, qualname, kind), (module, qualname, kind)


def _trusted_classes() -> list[str]:
    return sorted(sklearn_trust.ESTIMATORS | set(sklearn_trust.INTERNAL))


def test_trusted_sklearn_classes_are_sklearn_classes() -> None:
    """Every listed class that exists here is a class defined in scikit-learn, outside
    the dataset loaders, test helpers and callbacks; compiled ones are model state only
    and are internal types with a review of their own."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in _trusted_classes():
            assert name.startswith("sklearn."), name
            assert not any(
                bad in name
                for bad in (".datasets", "._testing", ".externals", "._mocking", ".callback")
            ), name
            obj = _resolve(name)
            if obj is None or f"{obj.__module__}.{obj.__qualname__}" != name:
                continue  # a name from another scikit-learn version (load refuses aliases)
            assert inspect.isclass(obj), name
            if not obj.__flags__ & (1 << 9):  # compiled (Cython) type
                assert name in sklearn_trust.INTERNAL, f"compiled {name} needs a review"


def test_every_internal_type_has_a_reason_and_its_kinds() -> None:
    for name, (kinds, reason) in sklearn_trust.INTERNAL.items():
        assert kinds and kinds <= {"obj", "red", "pyx"}, name
        assert len(reason) > 20, f"{name}: say why constructing it from data is safe"
    for name in sklearn_trust.RESTRICTED:
        assert name in sklearn_trust.INTERNAL, name


def _python_new(klass: type) -> bool:
    return isinstance(vars(klass).get("__new__"), staticmethod)


def test_special_methods_of_trusted_classes_are_reviewed() -> None:
    """A trusted class whose MRO defines __call__, __getattr__, __getattribute__,
    __del__, __setstate__, __setattr__ or a Python __new__ (other than object's and
    builtin bases') is in the reviewed-exceptions table, whose entry names its test."""
    missing = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in _trusted_classes():
            cls = _resolve(name)
            if not inspect.isclass(cls) or f"{cls.__module__}.{cls.__qualname__}" != name:
                continue
            for dunder in sklearn_trust.REVIEWED_DUNDERS:
                owner = next((k for k in cls.__mro__ if dunder in vars(k)), None)
                if owner is None or owner.__module__ == "builtins":
                    continue
                if dunder == "__new__" and not _python_new(owner):
                    continue  # a compiled allocator: reviewed with the class's entry
                key = (dunder, f"{owner.__module__}.{owner.__qualname__}")
                if key not in sklearn_trust.REVIEWED:
                    missing.append(f"{name}: {key}")
    assert not missing, "unreviewed special methods:\n" + "\n".join(missing)
    for key, (reason, test) in sklearn_trust.REVIEWED.items():
        assert len(reason) > 10, key
        assert (ROOT / test.partition("::")[0]).exists(), f"{key}: test {test} does not exist"


def test_no_gadget_family_is_trusted() -> None:
    """Nothing from sklearn.callback; Bunch only where RESTRICTED allows it; no class
    whose instances can be called like a function, except reviewed ones."""
    policy = TrustPolicy()
    for name in _trusted_classes():
        assert ".callback" not in name, name
    assert "sklearn.utils._bunch.Bunch" in sklearn_trust.RESTRICTED
    assert not policy.is_trusted("sklearn.utils._bunch", "Bunch", "red")
    assert not policy.is_trusted("sklearn.utils._bunch", "Bunch", "ref")
    # every class of scikit-learn with __call__ that the table trusts is reviewed
    for name in _trusted_classes():
        cls = _resolve(name)
        owner = next((k for k in getattr(cls, "__mro__", ()) if "__call__" in vars(k)), object)
        if inspect.isclass(cls) and owner.__module__.startswith("sklearn"):
            key = ("__call__", f"{owner.__module__}.{owner.__qualname__}")
            assert key in sklearn_trust.REVIEWED, name


def _load_tool(name: str) -> Any:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def test_callable_slots_cover_the_documented_ones() -> None:
    """Every parameter or attribute an estimator documents as callable is a checked
    slot (regenerate with ``python tools/gen_trusted.py``)."""
    from sklearn.utils import all_estimators

    gen = _load_tool("gen_trusted")
    missing = []
    for _, cls in all_estimators():
        name = f"{cls.__module__}.{cls.__qualname__}"
        have = set(sklearn_trust.CALLABLE_SLOTS.get(name, ()))
        lacking = set(gen.callable_slots(cls)) - have
        if lacking:
            missing.append(f"{name}: {sorted(lacking)}")
    assert not missing, missing


@pytest.mark.slow
def test_traced_types_are_in_the_table() -> None:
    """Fitting every estimator in common configurations reaches only types the table
    covers, of the kinds it allows; and every configuration that fits also saves."""
    trace = _load_tool("trace_model_types")
    functions: set[tuple[str, str]] = set()
    found, failed = trace.reached_types(functions=functions)
    assert not sklearn_trust.missing_from_table(found), sklearn_trust.missing_from_table(found)
    assert len(found) > 250, "the trace reached suspiciously few types"
    assert not failed, failed
    # every attribute a fitted model keeps a function in is a checked callable slot
    assert functions, "the trace found no function-valued attribute: it cannot check slots"
    assert not trace.unlisted_function_attributes(functions)


def test_trusted_sklearn_functions_are_pure_computations() -> None:
    """Functions are trusted only as references a model holds (score_func, metric,
    kernel); none reads or writes files or reaches the interpreter."""
    allowed_modules = (
        "sklearn.metrics.",
        "sklearn.feature_selection.",
        "sklearn.cluster._kmeans",
        "sklearn.utils.validation",
    )
    for name in sorted(sklearn_trust.FUNCTIONS):
        assert name.startswith(allowed_modules), name
        leaf = name.rpartition(".")[2].lower()
        assert not any(
            w in leaf for w in ("load", "save", "dump", "fetch", "open", "exec", "eval", "system")
        ), name
        obj = _resolve(name)
        if obj is None:
            continue
        assert callable(obj) and not inspect.isclass(obj), name
        assert obj.__module__.startswith("sklearn."), name


def test_numpy_and_builtin_references(policy: TrustPolicy) -> None:
    """numpy is trusted for ufuncs, scalar types and a fixed list of pure reductions;
    builtins only for plain types."""
    for attr in dir(np):
        if not policy.is_trusted("numpy", attr, "ref"):
            continue
        obj = getattr(np, attr)
        assert (
            isinstance(obj, np.ufunc)
            or (isinstance(obj, type) and issubclass(obj, np.generic))
            or attr in _NUMPY_FUNCTIONS
        ), attr
        for kind in ("obj", "red", "pyx"):
            assert not policy.is_trusted("numpy", attr, kind), (attr, kind)
    io_words = ("load", "save", "file", "txt", "memmap", "buffer", "ctypes", "fromregex")
    assert not [f for f in _NUMPY_FUNCTIONS if any(w in f for w in io_words)]
    assert not [t for t in _BUILTIN_TYPES if t in ("type", "eval", "exec", "open", "getattr")]
    for name in dir(__builtins__ if isinstance(__builtins__, dict) else vars(__builtins__)):
        if policy.is_trusted("builtins", name, "ref"):
            assert name in _BUILTIN_TYPES, name


def test_a_function_transformer_naming_os_system_is_refused() -> None:
    """End to end: the reference is written by name, and refused before any import."""
    from sklearn.preprocessing import FunctionTransformer

    X = np.zeros((2, 1))
    for func in (os.system, os.remove, np.load):
        data = sp.dumps(FunctionTransformer(func=func).fit(X))
        with pytest.raises(sp.UntrustedTypesError) as info:
            sp.loads(data)
        assert any(func.__name__ in t for t in info.value.types)


def test_a_trusted_reference_loads(policy: TrustPolicy) -> None:
    from sklearn.feature_selection import SelectKBest, chi2
    from sklearn.preprocessing import FunctionTransformer

    X = np.abs(np.random.RandomState(0).normal(size=(20, 4)))
    y = np.arange(20) % 2
    model = [FunctionTransformer(func=np.log1p).fit(X), SelectKBest(chi2, k=2).fit(X, y)]
    loaded = sp.loads(sp.dumps(model))
    assert loaded[0].func is np.log1p and loaded[1].score_func is chi2
