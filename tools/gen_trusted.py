"""Regenerate src/safepoint/format/sklearn/_generated.py from the installed scikit-learn.

    python tools/gen_trusted.py

Three generated tables (the reviewed ones live in src/safepoint/format/sklearn/trust_table.py):

ESTIMATORS: the public estimators, ``sklearn.utils.all_estimators()`` (with the
experimental halving searches enabled), outside test, mocking, dataset and
callback modules.

FUNCTIONS: only the scoring, distance, kernel and score functions that models
hold as parameters (``score_func``, ``metric``, ``kernel``, scorers) and the few
internal functions fitted models keep as attributes (``EXTRA_FUNCTIONS``);
functions that touch files, the network or the interpreter are never listed.

CALLABLE_SLOTS: for each class, the attributes scikit-learn *calls*: parameters and
fitted attributes whose documented type says "callable" or "function" (read from
the numpydoc ``Parameters`` and ``Attributes`` sections of every estimator), plus
private ones (``EXTRA_SLOTS``) that ``tools/trace_model_types.py`` finds holding
functions in fitted models. At load such a slot may hold a function trusted by
name, a string, None, a number or an array, never an instance of a class (except
the scorers ``sklearn_trust.SLOT_INSTANCES`` lists).

Names that exist in the installed scikit-learn are listed only if they pass these
rules; names from the previous file that do not exist here (from other
scikit-learn versions) are kept, so that files written under them keep loading.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
import warnings
from pathlib import Path

import sklearn

OUT = Path(__file__).resolve().parents[1] / "src/safepoint/format/sklearn/_generated.py"
SKIP = re.compile(
    r"(\.tests?(\.|$)|\._testing|\.externals|\.datasets|conftest|_build_utils|"
    r"\._show_versions|\.utils\._estimator_html_repr|\._config|\.callback|"
    r"\.utils\._mocking|\.utils\.estimator_checks|\._test_common)"
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
#: private attributes that hold functions the model calls (found by the trace tool)
EXTRA_SLOTS: dict[str, list[str]] = {
    "sklearn.metrics._scorer._BaseScorer": ["_score_func"],
    "sklearn.metrics._scorer._CurveScorer": ["_score_func"],
    "sklearn.model_selection._classification_threshold._CurveScorer": ["_score_func"],
    "sklearn.cluster._bisect_k_means.BisectingKMeans": ["_kmeans_single"],
    "sklearn.metrics._scorer._MultimetricScorer": ["_scorers"],
}
#: never trusted, whatever the rules above say
DENY = re.compile(r"(\.datasets\.|load|save|dump|fetch|download|open|exec|eval|system)", re.I)
#: a numpydoc entry: ``name : type description`` at the section's indentation
_ENTRY = re.compile(r"^(\w+)\s*:\s*(.*)$")
_CALLABLE = re.compile(r"\bcallable\b|\bfunction\b", re.I)


def previous() -> tuple[set[str], set[str], dict[str, list[str]]]:
    if not OUT.exists():
        return set(), set(), {}
    ns: dict[str, object] = {}
    exec(OUT.read_text(), ns)  # our own generated file
    return (
        set(ns["ESTIMATORS"]),  # type: ignore[arg-type]
        set(ns["FUNCTIONS"]),  # type: ignore[arg-type]
        {k: list(v) for k, v in ns["CALLABLE_SLOTS"].items()},  # type: ignore[attr-defined]
    )


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


def callable_slots(cls: type) -> list[str]:
    """Parameters and attributes documented as callable in ``cls``'s docstring."""
    doc = inspect.getdoc(cls) or ""
    section = None
    out = []
    for line in doc.splitlines():
        text = line.rstrip()
        if text and not line.startswith(" ") and set(text) != {"-"}:
            if text in ("Parameters", "Attributes"):
                section = text
                continue
            m = _ENTRY.match(text)
            if section and m:
                if _CALLABLE.search(m.group(2)):
                    out.append(m.group(1))
                continue
            if not m:
                section = None
    return sorted(set(out))


def main() -> None:
    warnings.simplefilter("ignore")
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.utils import all_estimators

    old_estimators, old_functions, old_slots = previous()
    estimators = {c for c in old_estimators if not resolves(c)}
    functions = {f for f in old_functions if not resolves(f)}
    slots = {k: v for k, v in old_slots.items() if not resolves(k)}
    for _, cls in all_estimators():
        name = f"{cls.__module__}.{cls.__qualname__}"
        if SKIP.search(cls.__module__):
            continue
        estimators.add(name)
        found = callable_slots(cls)
        if found:
            slots[name] = found
    for name, extra in EXTRA_SLOTS.items():
        if resolves(name) or name in old_slots:
            slots[name] = sorted(set(slots.get(name, [])) | set(extra))
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
    denied = sorted(n for n in estimators | functions if DENY.search(n.rpartition(".")[2]))
    if denied:
        print("denied:", denied, file=sys.stderr)
    estimators -= set(denied)
    functions -= set(denied)
    body = [
        f'"""Generated by tools/gen_trusted.py (scikit-learn {sklearn.__version__}); '
        'do not edit."""',
        "",
        "ESTIMATORS = frozenset(",
        "    {",
        *[f"        {json.dumps(c)}," for c in sorted(estimators)],
        "    }",
        ")",
        "",
        "FUNCTIONS = frozenset(",
        "    {",
        *[f"        {json.dumps(f)}," for f in sorted(functions)],
        "    }",
        ")",
        "",
        "CALLABLE_SLOTS: dict[str, tuple[str, ...]] = {",
        *[
            f"    {json.dumps(k)}: ({', '.join(json.dumps(s) for s in v)},),"
            for k, v in sorted(slots.items())
        ],
        "}",
        "",
    ]
    OUT.write_text("\n".join(body))
    print(f"{len(estimators)} estimators, {len(functions)} functions, {len(slots)} with slots")


if __name__ == "__main__":
    main()
