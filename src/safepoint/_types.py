"""Type aliases shared by the public signatures (one definition, so the docs, the
signatures and the checks that enforce them agree).

>>> from safepoint._types import EnvPolicy
>>> from typing import get_args
>>> get_args(EnvPolicy)
('warn', 'error', 'ignore')
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, BinaryIO, Literal, TypeAlias

__all__ = ["EnvPolicy", "KeyLike", "PathLike", "RunStatus", "Source", "Trusted"]

#: ``trusted=``: type names (``"pkg.module.Class"``), ``(module, qualname)`` pairs or the
#: classes/functions themselves; one of them alone, an iterable of them, or nothing
Trusted: TypeAlias = Iterable[Any] | str | type | None

#: ``env=``: what a load does when library versions differ from the file's
EnvPolicy: TypeAlias = Literal["warn", "error", "ignore"]

#: the status of a run in a store's runs table (``store.runs``)
RunStatus: TypeAlias = Literal["running", "succeeded", "failed", "interrupted"]

#: ``key=``: an HMAC key (bytes) or an Ed25519 key (cryptography) to sign or verify with
KeyLike: TypeAlias = Any

#: a path on the local file system
PathLike: TypeAlias = str | os.PathLike[str]

#: what the format reads from: a path, a binary file object or the bytes themselves
Source: TypeAlias = str | os.PathLike[str] | BinaryIO | bytes | bytearray | memoryview
