"""The default trust set: complete for scikit-learn's estimators, and free of anything
that reads files, runs processes or reaches the interpreter.

A new scikit-learn that adds an estimator makes ``test_every_estimator_is_trusted``
fail loudly: regenerate the list with ``python tools/gen_trusted.py``.
"""

from __future__ import annotations

import importlib
import inspect
import os
import warnings
from typing import Any

import numpy as np
import pytest
from sklearn.utils import all_estimators

import safepoint as sp
from safepoint.format import _trusted_sklearn
from safepoint.format.trust import _BUILTIN_TYPES, _NUMPY_FUNCTIONS, TrustPolicy

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


def test_trusted_sklearn_classes_are_sklearn_classes() -> None:
    """Every listed class that exists here is a class defined in scikit-learn, outside
    the dataset loaders and test helpers; compiled ones are model state only."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in sorted(_trusted_sklearn.CLASSES):
            assert name.startswith("sklearn."), name
            assert not any(
                bad in name for bad in (".datasets", "._testing", ".externals", "._mocking")
            ), name
            obj = _resolve(name)
            if obj is None:
                continue  # a name from another scikit-learn version
            assert inspect.isclass(obj), name
            assert f"{obj.__module__}.{obj.__qualname__}" == name, name
            if not obj.__flags__ & (1 << 9):  # compiled (Cython) type
                assert name.startswith(
                    (
                        "sklearn._loss._loss.Cy",
                        "sklearn.linear_model._sgd_fast.",
                        "sklearn.metrics._dist_metrics.",
                        "sklearn.tree._tree.Tree",
                    )
                ), f"compiled fit-time class {name} should not be trusted"


def test_trusted_sklearn_functions_are_pure_computations() -> None:
    """Functions are trusted only as references a model holds (score_func, metric,
    kernel); none reads or writes files or reaches the interpreter."""
    allowed_modules = (
        "sklearn.metrics.",
        "sklearn.feature_selection.",
        "sklearn.cluster._kmeans",
        "sklearn.utils.validation",
    )
    for name in sorted(_trusted_sklearn.FUNCTIONS):
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
