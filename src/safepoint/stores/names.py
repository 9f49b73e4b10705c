"""Validation of model names, references and checkpoint keys.

Model names are namespaced paths: one or more segments separated by ``/``, each made
of letters, digits, ``.``, ``_`` and ``-``. Empty segments, ``.``/``..``, absolute
paths and backslashes are refused, so that a name can never escape the store's
folder or alias another model.

>>> from safepoint.stores.names import check_name, parse_ref
>>> check_name("fraud/scorer")
'fraud/scorer'
>>> parse_ref("fraud/scorer@3")
('fraud/scorer', 3)
>>> parse_ref("fraud/scorer@production")
('fraud/scorer', 'production')
"""

from __future__ import annotations

import re

from ..errors import InvalidNameError

__all__ = ["MAX_KEY", "MAX_NAME", "check_alias", "check_key", "check_name", "parse_ref"]

MAX_NAME = 200
MAX_KEY = 1024
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")
_ALIAS = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]{0,99}$")


def check_name(name: object, what: str = "model name") -> str:
    """Return ``name`` if it is a valid namespaced name, else raise InvalidNameError."""
    if not isinstance(name, str):
        raise InvalidNameError(
            f"a {what} must be a str like 'project/model', not {type(name).__name__}"
        )
    hint = "use segments of letters, digits, '.', '_' or '-' separated by '/', e.g. 'project/model'"
    if not name:
        raise InvalidNameError(f"the {what} is empty; {hint}")
    if len(name) > MAX_NAME:
        raise InvalidNameError(f"the {what} is {len(name)} characters long (max {MAX_NAME})")
    if "\\" in name:
        raise InvalidNameError(f"the {what} {name!r} contains a backslash; {hint}")
    if name.startswith("/"):
        raise InvalidNameError(f"the {what} {name!r} is an absolute path; {hint}")
    for seg in name.split("/"):
        if not seg:
            raise InvalidNameError(f"the {what} {name!r} has an empty segment; {hint}")
        if seg in (".", ".."):
            raise InvalidNameError(f"the {what} {name!r} contains {seg!r}; {hint}")
        if not _SEGMENT.match(seg):
            raise InvalidNameError(f"the {what} {name!r} has an invalid segment {seg!r}; {hint}")
    return name


def check_alias(alias: object) -> str:
    """Return ``alias`` if valid: a letter or ``_`` then letters, digits, ``.``, ``_``, ``-``.

    Aliases cannot look like version numbers, so ``name@3`` is never ambiguous.
    """
    if not isinstance(alias, str) or not _ALIAS.match(alias):
        raise InvalidNameError(
            f"invalid alias {alias!r}: start with a letter or '_', then letters, digits, "
            "'.', '_' or '-' (at most 100 characters), e.g. 'production'"
        )
    if alias == "latest":
        raise InvalidNameError("'latest' is reserved (it always means the newest version)")
    return alias


def check_key(key: object) -> str:
    """Return a checkpointer key if valid: a non-empty str without NUL, <= 1024 chars."""
    if not isinstance(key, str):
        raise InvalidNameError(f"a checkpoint key must be a str, not {type(key).__name__}")
    if not key or len(key) > MAX_KEY or "\x00" in key:
        raise InvalidNameError(
            f"invalid checkpoint key {key[:50]!r}: use a non-empty string of at most "
            f"{MAX_KEY} characters without NUL"
        )
    return key


def parse_ref(ref: object) -> tuple[str, int | str | None]:
    """Split ``NAME[@VERSION|@ALIAS]`` into ``(name, version_or_alias_or_None)``."""
    if not isinstance(ref, str):
        raise InvalidNameError(f"a model reference must be a str, not {type(ref).__name__}")
    name, sep, sel = ref.partition("@")
    check_name(name)
    if not sep:
        return name, None
    if sel.isdigit():
        return name, int(sel)
    if sel == "latest":
        return name, None
    return name, check_alias(sel)
