"""The safepoint file format: spec, writer, reader, trust policy, type handlers."""

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
from .spec import Limits
from .writer import WriteResult

__all__ = [
    "Inspection",
    "Limits",
    "VerifyReport",
    "WriteResult",
    "dump",
    "dumps",
    "inspect",
    "load",
    "loads",
    "untrusted_types",
    "verify",
]
