"""Regenerate src/safepoint/format/_trusted_sklearn.py from the installed scikit-learn.

    python tools/gen_trusted.py

Classes: every Python class defined in a scikit-learn module, except test and
benchmark helpers and the dataset downloaders; compiled (Cython extension)
classes only where fitted models hold them (trees, losses, distance metrics),
never the transient machinery of ``fit`` (splitters, criteria, datasets, heaps,
pairwise reductions), whose constructors trust their arguments.

Functions: only the scoring, distance, kernel and score functions that models
hold as parameters (``score_func``, ``metric``, ``kernel``, scorers) and the few
internal functions fitted models keep as attributes (``EXTRA_FUNCTIONS``);
functions that touch files, the network or the interpreter are never listed.

Names that exist in the installed scikit-learn are listed only if they pass
these rules; names from the previous file that do not exist here (from older
scikit-learn versions) are kept, so that files written under them keep loading.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import re
import sys
import warnings
from pathlib import Path

import sklearn

OUT = Path(__file__).resolve().parents[1] / "src/safepoint/format/_trusted_sklearn.py"
SKIP = re.compile(
    r"(\.tests?(\.|$)|\._testing|\.externals|\.datasets|conftest|_build_utils|"
    r"\.experimental|_show_versions|\.utils\._estimator_html_repr|\._config|"
    r"\.utils\._mocking|\.utils\.estimator_checks|\._test_common)"
)
#: compiled classes that fitted models hold (everything else compiled is fit-time machinery)
MODEL_EXTENSION_TYPES = re.compile(
    r"^(sklearn\._loss\._loss\.Cy\w+"
    r"|sklearn\.linear_model\._sgd_fast\.\w+"
    r"|sklearn\.metrics\._dist_metrics\.\w+"
    r"|sklearn\.tree\._tree\.Tree)$"
)
FUNCTION_MODULES = [
    "sklearn.metrics",
    "sklearn.metrics.pairwise",
    "sklearn.metrics.cluster",
    "sklearn.feature_selection",
]
#: functions fitted models keep as attributes (called by the model, never at load)
EXTRA_FUNCTIONS = [
    # BisectingKMeans._kmeans_single
    "sklearn.cluster._kmeans._kmeans_single_elkan",
    "sklearn.cluster._kmeans._kmeans_single_lloyd",
    # HistGradientBoosting's preprocessor: FunctionTransformer(partial(check_array, ...))
    "sklearn.utils.validation.check_array",
]
#: never trusted, whatever the rules above say
DENY = re.compile(r"(\.datasets\.|load|save|dump|fetch|download|open|exec|eval|system)", re.I)


def previous() -> tuple[set[str], set[str]]:
    if not OUT.exists():
        return set(), set()
    ns: dict[str, object] = {}
    exec(OUT.read_text(), ns)  # our own generated file
    return set(ns["CLASSES"]), set(ns["FUNCTIONS"])  # type: ignore[arg-type]


def resolves(name: str) -> bool:
    module, _, qualname = name.rpartition(".")
    while module:
        try:
            obj = importlib.import_module(module)
        except ImportError:
            qualname = module.rpartition(".")[2] + "." + qualname
            module = module.rpartition(".")[0]
            continue
        for part in qualname.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                return False
        return True
    return False


def is_extension_type(cls: type) -> bool:
    return not cls.__flags__ & (1 << 9)  # Py_TPFLAGS_HEAPTYPE: classes written in Python


def main() -> None:
    warnings.simplefilter("ignore")
    old_classes, old_functions = previous()
    classes = {c for c in old_classes if not resolves(c)}
    functions = {f for f in old_functions if not resolves(f)}
    for info in pkgutil.walk_packages(sklearn.__path__, "sklearn."):
        if SKIP.search(info.name):
            continue
        try:
            mod = importlib.import_module(info.name)
        except Exception as exc:  # optional deps
            print("skip", info.name, exc, file=sys.stderr)
            continue
        for _, obj in inspect.getmembers(mod, inspect.isclass):
            if obj.__module__ != info.name or SKIP.search(obj.__module__):
                continue
            name = f"{obj.__module__}.{obj.__qualname__}"
            if is_extension_type(obj) and not MODEL_EXTENSION_TYPES.match(name):
                continue
            classes.add(name)
    for modname in FUNCTION_MODULES:
        mod = importlib.import_module(modname)
        for attr in getattr(mod, "__all__", dir(mod)):
            obj = getattr(mod, attr, None)
            if not callable(obj) or inspect.isclass(obj) or attr.startswith("_"):
                continue
            # defined in the module itself (or its private submodules), not imported helpers
            if getattr(obj, "__module__", "").startswith(modname):
                functions.add(f"{obj.__module__}.{obj.__qualname__}")
    functions.update(EXTRA_FUNCTIONS)
    denied = sorted(n for n in classes | functions if DENY.search(n.rpartition(".")[2]))
    if denied:
        print("denied:", denied, file=sys.stderr)
    classes -= set(denied)
    functions -= set(denied)
    body = [
        f'"""Generated by tools/gen_trusted.py (scikit-learn {sklearn.__version__}); '
        'do not edit."""',
        "",
        "CLASSES = frozenset(",
        "    {",
        *[f"        {json.dumps(c)}," for c in sorted(classes)],
        "    }",
        ")",
        "",
        "FUNCTIONS = frozenset(",
        "    {",
        *[f"        {json.dumps(f)}," for f in sorted(functions)],
        "    }",
        ")",
        "",
    ]
    OUT.write_text("\n".join(body))
    print(f"{len(classes)} classes, {len(functions)} functions -> {OUT}")


if __name__ == "__main__":
    main()
