"""The safepoint file format: spec, writer, reader, trust policy, type handlers.

:func:`open` returns a :class:`SafepointFile`, the handle on an open file that
``sp.load``, ``sp.inspect`` and ``sp.verify`` use; plugins register in
:mod:`safepoint.format.registry`.
"""

from .api import (
    Inspection,
    VerifyReport,
    dump,
    dumps,
    inspect,
    load,
    loads,
    untrusted_types,
    verify,
)
from .file import SafepointFile, open
from .registry import load_builtins as _load_builtins
from .spec import Limits
from .writer import WriteResult

__all__ = [
    "Inspection",
    "Limits",
    "SafepointFile",
    "VerifyReport",
    "WriteResult",
    "dump",
    "dumps",
    "inspect",
    "load",
    "loads",
    "open",
    "untrusted_types",
    "verify",
]

# the built-in handlers, validators, migrations and adapter declarations register
# themselves when imported: one list, in the registry (the core names no plugin)
_load_builtins()
