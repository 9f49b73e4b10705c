"""A small declarative schema for prediction streams.

Three equivalent spellings::

    >>> from safepoint.workflows.scoring.schema import Schema
    >>> s1 = Schema.parse('''
    ...   type Predictions @schema {
    ...     id: Int! @key
    ...     prediction: Float!
    ...   }''')
    >>> s2 = Schema.parse("id: int! @key, prediction: float!")
    >>> s3 = Schema({"id": "int!", "prediction": "float!"}, key="id")
    >>> s1 == s2 == s3
    True

``!`` means not nullable; ``@key`` marks the column that identifies a record
(records with a key already written are dropped as duplicates, and counted).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ...errors import SchemaError

__all__ = ["Field", "Schema"]

_TYPES: dict[str, pa.DataType] = {
    "int": pa.int64(),
    "float": pa.float64(),
    "string": pa.string(),
    "str": pa.string(),
    "bool": pa.bool_(),
    "boolean": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "bytes": pa.binary(),
}
_FIELD = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*:\s*([A-Za-z]+)\s*(!?)\s*(@key\b)?")


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    nullable: bool = True

    @property
    def arrow_type(self) -> pa.DataType:
        return _TYPES[self.type]


@dataclass(frozen=True)
class Schema:
    """Output columns: names, types, nullability and an optional key."""

    fields: tuple[Field, ...] = field(default_factory=tuple)
    key: str | None = None

    def __init__(self, columns: Any = None, key: str | None = None) -> None:
        fields: list[Field] = []
        if isinstance(columns, dict):
            for name, spec in columns.items():
                if not isinstance(spec, str):
                    raise SchemaError(f"column {name!r}: type must be a string like 'float!'")
                fields.append(_field(name, spec.strip().rstrip("!"), spec.strip().endswith("!")))
        elif columns is not None:
            fields = list(columns)
        names = [f.name for f in fields]
        if len(set(names)) != len(names):
            raise SchemaError(f"duplicate column names in schema: {names}")
        if key is not None and key not in names:
            raise SchemaError(f"key {key!r} is not a column of the schema {names}")
        if not fields:
            raise SchemaError("a schema needs at least one column")
        object.__setattr__(self, "fields", tuple(fields))
        object.__setattr__(self, "key", key)

    @classmethod
    def parse(cls, text: str) -> Schema:
        """Parse the GraphQL-like form, the compact ``name: type! @key, ...`` form, or JSON."""
        if not isinstance(text, str) or not text.strip():
            raise SchemaError("a schema must be a non-empty string")
        stripped = text.strip()
        if stripped.startswith("{") and stripped.endswith("}") and '"' in stripped:
            try:
                data = json.loads(stripped)
            except json.JSONDecodeError as exc:
                raise SchemaError(f"schema JSON is invalid: {exc}") from None
            return cls(data.get("columns", data), key=data.get("key"))
        body = stripped
        m = re.match(r"^type\s+\w+\s*(@\w+\s*)*\{(.*)\}\s*$", stripped, re.S)
        if m:
            body = m.group(2)
        fields, key = [], None
        pos = 0
        for fm in _FIELD.finditer(body):
            gap = body[pos : fm.start()]
            if gap.strip(" \t\r\n,;"):
                break
            name, typ, bang, is_key = fm.groups()
            fields.append(_field(name, typ, bool(bang)))
            if is_key:
                if key is not None:
                    raise SchemaError("a schema may have only one @key column")
                key = name
            pos = fm.end()
        rest = body[pos:].strip(" \t\r\n,;")
        if rest or not fields:
            raise SchemaError(
                f"cannot parse schema near {rest[:40]!r}: expected fields like "
                "'id: Int! @key' (GraphQL style) or 'id: int!, prediction: float'"
            )
        return cls(fields, key=key)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def arrow(self) -> pa.Schema:
        return pa.schema([pa.field(f.name, f.arrow_type, nullable=f.nullable) for f in self.fields])

    def conform(self, df: pd.DataFrame) -> tuple[pa.Table, list[tuple[int, str]]]:
        """Cast ``df`` to the schema. Returns the good rows as a table, and
        ``(row position, reason)`` for each row that does not fit."""
        missing = [n for n in self.names if n not in df.columns]
        if missing:
            raise SchemaError(
                f"the output lacks column(s) {missing} required by the schema "
                f"(it has {list(df.columns)}): make apply() return them"
            )
        n = len(df)
        bad = np.zeros(n, dtype=bool)
        reasons: dict[int, str] = {}
        cols: dict[str, Any] = {}
        for f in self.fields:
            col = df[f.name]
            try:
                arr = pa.array(col, type=f.arrow_type, from_pandas=True)
                ok = None
            except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError, TypeError, OverflowError):
                arr, ok = _cast_rows(col, f)
            nulls = np.asarray(arr.is_null(nan_is_null=True)) if n else np.zeros(0, bool)
            if ok is not None:
                for i in np.flatnonzero(~ok & ~bad):
                    reasons[int(i)] = f"{f.name}: {col.iloc[i]!r} is not a {f.type}"
                bad |= ~ok
                nulls &= ok
            if not f.nullable and nulls.any():
                for i in np.flatnonzero(nulls & ~bad):
                    reasons[int(i)] = f"{f.name} is null but the schema says {f.type}!"
                bad |= nulls
            cols[f.name] = arr
        table = pa.table(cols, schema=self.arrow())
        if bad.any():
            table = table.filter(pa.array(~bad))
        return table, sorted(reasons.items())


def _field(name: str, typ: str, required: bool) -> Field:
    t = typ.lower()
    if t not in _TYPES:
        raise SchemaError(
            f"column {name!r}: unknown type {typ!r}; use one of "
            f"{sorted({'Int', 'Float', 'String', 'Boolean', 'Timestamp', 'Bytes'})}"
        )
    return Field(name, "string" if t == "str" else "bool" if t == "boolean" else t, not required)


def _cast_rows(col: pd.Series, f: Field) -> tuple[pa.Array, np.ndarray[Any, Any]]:
    """Cast value by value; rows that do not convert become null and are flagged."""
    ok = np.ones(len(col), dtype=bool)
    values: list[Any] = []
    for i, v in enumerate(col.tolist()):
        try:
            values.append(pa.scalar(v, type=f.arrow_type).as_py() if v is not None else None)
        except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError, TypeError, OverflowError):
            values.append(None)
            ok[i] = False
    return pa.array(values, type=f.arrow_type), ok
