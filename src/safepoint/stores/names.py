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
>>> parse_ref("fraud/scorer@latest")
('fraud/scorer', 'latest')
>>> check_version("12")
12
"""

from __future__ import annotations

import operator
import re
from typing import Any

from ..errors import InvalidNameError

__all__ = [
    "MAX_KEY",
    "MAX_NAME",
    "MAX_VERSION",
    "check_alias",
    "check_key",
    "check_name",
    "check_run_id",
    "check_version",
    "parse_ref",
]

MAX_NAME = 200
MAX_KEY = 1024
#: version numbers are 32-bit on every catalog backend
MAX_VERSION = 2**31 - 1
# fullmatch everywhere: "$" would let a trailing newline through
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_ALIAS = re.compile(r"[A-Za-z_][A-Za-z0-9._-]{0,99}")
_DIGITS = re.compile(r"[0-9]{1,12}")
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")


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
        if not _SEGMENT.fullmatch(seg):
            raise InvalidNameError(f"the {what} {name!r} has an invalid segment {seg!r}; {hint}")
    return name


def check_alias(alias: object) -> str:
    """Return ``alias`` if valid: a letter or ``_`` then letters, digits, ``.``, ``_``, ``-``.

    Aliases cannot look like version numbers, so ``name@3`` is never ambiguous.
    """
    if not isinstance(alias, str) or not _ALIAS.fullmatch(alias):
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


def check_version(value: object, what: str = "version") -> int:
    """A version number from an int, an int-like (numpy integers) or a str of ASCII digits.

    Versions are 1 ... 2**31 - 1; anything else raises InvalidNameError naming ``what``.
    """
    if isinstance(value, bool):
        raise InvalidNameError(f"{what} must be an int version, not {value!r}")
    if isinstance(value, str):
        if not _DIGITS.fullmatch(value):
            raise InvalidNameError(
                f"{what} must be a version number (ASCII digits), not {value[:40]!r}"
            )
        n = int(value)
    else:
        try:
            n = operator.index(value)  # type: ignore[arg-type]
        except TypeError:
            raise InvalidNameError(
                f"{what} must be an int version, not {type(value).__name__} {value!r}"[:200]
            ) from None
    if not 1 <= n <= MAX_VERSION:
        raise InvalidNameError(f"{what} must be between 1 and {MAX_VERSION}, not {n}")
    return n


def check_run_id(value: Any, what: str = "run_id") -> str:
    """A run id: 1-32 letters, digits, ``_`` or ``-``."""
    if not isinstance(value, str) or not _RUN_ID.fullmatch(value):
        shown = value[:40] if isinstance(value, str) else type(value).__name__
        raise InvalidNameError(
            f"{what} must be 1-32 letters, digits, '_' or '-' (a run's id), not {shown!r}"
        )
    return value


def parse_ref(ref: object) -> tuple[str, int | str | None]:
    """Split ``NAME[@VERSION|@ALIAS|@latest]`` into ``(name, version, alias, "latest" or None)``."""
    if not isinstance(ref, str):
        raise InvalidNameError(f"a model reference must be a str, not {type(ref).__name__}")
    name, sep, sel = ref.partition("@")
    check_name(name)
    if not sep:
        return name, None
    if sel[:1].isdigit():
        return name, check_version(sel, f"the version in {ref[:250]!r}")
    if sel == "latest":
        return name, "latest"
    return name, check_alias(sel)
