"""Migrations: load files written under older library versions.

Library drift is why pickled models break: scikit-learn renames a private
attribute, removes a helper class, or starts reading an attribute that older
versions never set. A file records the versions it was written with; when the
installed versions differ, the state is rewritten here into what the installed
version expects, so that the model predicts exactly as before. Where that is
impossible, the migration raises a :class:`~safepoint.errors.FormatError` that
names the attribute, both versions and what to do.

Two kinds of migration:

* **state migrations** (:func:`safepoint.format.registry.register_migration`): a
  function ``(state, decoder) -> state`` for a type whose attributes changed;
* **type migrations** (:func:`safepoint.format.registry.register_type_migration`):
  a class that no longer exists. The old name is accepted by the audit *only*
  because a migration is registered, and its node is rebuilt by that function
  (never by importing the old name), e.g. ``_RemainderColsList`` (scikit-learn
  1.5-1.6) becomes the plain list that later versions store.

This module holds the helpers migrations share; scikit-learn's own are in
:mod:`safepoint.format.sklearn.migrations`.

Every migration is tested against files written under the old versions
(``tests/data/drift``, made by ``tools/make_drift_files.py``).

Example, for a package of your own::

    from safepoint.format.registry import register_migration

    @register_migration("mypkg.models.Scorer")
    def _rename_weights(state, dec):
        if isinstance(state, dict) and "w" in state:
            state = {**state, "weights_": state.pop("w")}
        return state
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .decoder import Decoder

__all__ = ["decoded_parts", "file_version", "installed_version", "version_tuple"]


def version_tuple(version: str | None) -> tuple[int, ...]:
    """``"1.6.1"`` -> ``(1, 6, 1)``; pre-release suffixes are ignored."""
    out = []
    for part in (version or "").split("."):
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def file_version(dec: Decoder, package: str = "scikit-learn") -> str | None:
    """The version of ``package`` recorded in the file being decoded."""
    env = dec.reader.manifest.get("env")
    pkgs = env.get("packages") if isinstance(env, dict) else None
    v = pkgs.get(package) if isinstance(pkgs, dict) else None
    return v if isinstance(v, str) else None


def installed_version(package: str = "sklearn") -> str:
    """The version of the installed (already imported) module ``package``, or ``"?"``."""
    import sys

    mod = sys.modules.get(package)
    return str(getattr(mod, "__version__", "?"))


def decoded_parts(node: dict[str, Any], dec: Decoder) -> tuple[Any, Any, Any, Any]:
    """A node's decoded (arguments, state, list items, dict items); None when absent."""

    def part(key: str) -> Any:
        return dec.decode(node[key]) if key in node else None

    return part("a"), part("s"), part("li"), part("di")
