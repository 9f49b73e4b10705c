"""What a file records about where it was written, and how a load compares.

Library drift is why pickled models break: a file records Python, the
platform and the version of numpy, scipy, pandas, scikit-learn and of every
package whose types it holds; :func:`compare` explains differences. Packages
are compared by what is installed, whatever the distribution's name: a file
naming ``xgboost`` is satisfied by the ``xgboost-cpu`` distribution.
"""

from __future__ import annotations

import functools
import json
import platform
import sys
import warnings
from typing import Any

from .._types import EnvPolicy
from ..errors import EnvironmentMismatchError, EnvironmentMismatchWarning, EnvPolicyError

__all__ = ["capture", "capture_json", "check", "compare", "signature_of"]

#: import name -> distribution name, where they differ
_DISTRIBUTIONS = {"sklearn": "scikit-learn", "skops": "skops", "yaml": "PyYAML"}
_ALWAYS = ("numpy",)
#: packages of a file's record that a load compares (a real record lists a handful)
_MAX_COMPARED = 256


@functools.cache
def _version(module: str) -> str | None:
    mod = sys.modules.get(module)
    v = getattr(mod, "__version__", None)
    if isinstance(v, str):
        return v
    # importlib.metadata costs ~0.1 s to import: only when a module has no __version__
    from importlib import metadata

    try:
        return metadata.version(_DISTRIBUTIONS.get(module, module))
    except (metadata.PackageNotFoundError, ValueError):
        # ValueError: not a distribution name at all (a crafted file may hold anything)
        pass
    # the import name may come from a distribution of another name: `xgboost` from
    # xgboost-cpu, `dateutil` from python-dateutil
    for dist in _distributions_of().get(module, ()):
        try:
            return metadata.version(dist)
        except (metadata.PackageNotFoundError, ValueError):
            continue
    return None


@functools.cache
def _distributions_of() -> dict[str, list[str]]:
    """Import name -> the installed distributions providing it (one scan, when needed)."""
    from importlib import metadata

    return dict(metadata.packages_distributions())


@functools.cache
def _static() -> dict[str, Any]:
    from .. import __version__

    return {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": f"{sys.platform}-{platform.machine()}",
        "byteorder": sys.byteorder,
        "safepoint": __version__,
    }


#: the records made so far, by the packages a file holds types from
_captured: dict[frozenset[str], dict[str, Any]] = {}


def capture(packages: set[str]) -> dict[str, Any]:
    """The environment record for a file holding types from ``packages``.

    The same record (one dict, never to be changed) for the same packages: it
    depends only on them and on versions read once per process (:func:`_version`),
    and every save writes one. A package imported later is another key.
    """
    key = frozenset(packages)
    found = _captured.get(key)
    if found is None:
        found = _capture(key)
        if len(_captured) < 256:
            _captured[key] = found
    return found


#: :func:`capture_json` so far
_captured_json: dict[frozenset[str], str] = {}


def capture_json(packages: set[str]) -> str:
    """:func:`capture` as compact JSON text (what a manifest holds), made once."""
    key = frozenset(packages)
    found = _captured_json.get(key)
    if found is None:
        found = json.dumps(capture(packages), separators=(",", ":"), allow_nan=True)
        if len(_captured_json) < 256:
            _captured_json[key] = found
    return found


def _capture(packages: frozenset[str]) -> dict[str, Any]:
    # only libraries whose types the file holds: what else happens to be imported must
    # not change the file (its digest is its identity in a store)
    names = set(_ALWAYS) | packages
    names -= {"builtins", "safepoint"}
    pkgs = {}
    for name in sorted(names):
        v = _version(name)
        if v is not None:
            pkgs[_DISTRIBUTIONS.get(name, name)] = v
    return {**_static(), "packages": pkgs}


def compare(recorded: Any) -> list[str]:
    """Human-readable differences between a file's environment and this one."""
    if not isinstance(recorded, dict):
        return []
    key = _record_key(recorded)
    if key is None:
        return _compare(recorded)
    found = _compared.get(key)
    if found is None:
        found = _compare(recorded)
        if len(_compared) < 256:
            # what is installed does not change under a running process (a version
            # is read once, see _version): a record seen before compares the same
            _compared[key] = found
    return list(found)


#: (python, packages) of a record -> its differences with this process
_compared: dict[tuple[Any, ...], list[str]] = {}


def _record_key(recorded: dict[str, Any]) -> tuple[Any, ...] | None:
    """What :func:`compare` reads of a record, hashable; None for an odd record."""
    pkgs = recorded.get("packages")
    python = recorded.get("python", "")
    if type(python) is not str or (pkgs is not None and type(pkgs) is not dict):
        return None
    items = tuple(pkgs.items()) if pkgs else ()
    if len(items) > 64 or not all(type(k) is str and type(v) is str for k, v in items):
        return None
    return (python, pkgs is None, items)


def _compare(recorded: dict[str, Any]) -> list[str]:
    here = _static()
    out = []
    rpy = str(recorded.get("python", ""))
    if rpy.split(".")[:2] != here["python"].split(".")[:2]:
        out.append(f"Python {rpy} (file) vs {here['python']} (here)")
    pkgs = recorded.get("packages")
    if isinstance(pkgs, dict):
        inverse = {v: k for k, v in _DISTRIBUTIONS.items()}
        items = sorted(pkgs.items())
        if len(items) > _MAX_COMPARED:
            # each unknown name costs a scan of sys.path: a crafted list must not stall a load
            out.append(
                f"the file records {len(items)} packages; only the first {_MAX_COMPARED} "
                "were compared (a crafted file?)"
            )
            items = items[:_MAX_COMPARED]
        for dist, v in items:
            if not isinstance(dist, str) or not isinstance(v, str):
                continue
            mod = inverse.get(dist, dist)
            now = _version(mod)
            if now is None:
                out.append(f"{dist} {v} (file) is not installed here")
            elif now != v:
                out.append(f"{dist} {v} (file) vs {now} (here)")
    return out


def check(recorded: Any, policy: EnvPolicy | str) -> list[str]:
    """Apply ``env=`` policy; returns the differences found."""
    if policy not in ("warn", "error", "ignore"):
        raise EnvPolicyError(f"env must be 'warn', 'error' or 'ignore', not {policy!r}")
    if policy == "ignore":
        return []
    diffs = compare(recorded)
    if diffs:
        msg = (
            "the file was written in another environment: " + "; ".join(diffs) + ". "
            "Predictions may differ; run `safepoint verify FILE` (it re-checks stored golden "
            "outputs), or install the recorded versions."
        )
        if policy == "error":
            raise EnvironmentMismatchError(msg + " (load with env='warn' to proceed anyway)")
        warnings.warn(msg, EnvironmentMismatchWarning, stacklevel=3)
    return diffs


def signature_of(obj: Any, sample: Any = None) -> dict[str, Any] | None:
    """The model's input signature: feature names, count and, from a sample, dtypes."""
    sig: dict[str, Any] = {}
    n = getattr(obj, "n_features_in_", None)
    if isinstance(n, int):
        sig["n_features_in"] = n
    names = getattr(obj, "feature_names_in_", None)
    if names is not None:
        sig["feature_names"] = [str(x) for x in list(names)]
    if sample is not None:
        dtypes = getattr(sample, "dtypes", None)
        if dtypes is not None and hasattr(dtypes, "items"):
            sig["dtypes"] = {str(k): str(v) for k, v in dtypes.items()}
            sig.setdefault("feature_names", [str(c) for c in sample.columns])
        elif hasattr(sample, "dtype"):
            sig["dtype"] = str(sample.dtype)
    return sig or None
