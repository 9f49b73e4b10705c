"""The inert graph a pickle stream is parsed into.

Nothing here is executable: a :class:`GlobalRef` is two strings, a :class:`Call`
records *that* the stream asked for a call and with what, and the containers hold
other nodes. Scalars (``None``, ``bool``, ``int``, ``float``, ``str``) are kept as
plain Python values; bytes are :class:`BytesNode` views on the input.

Nodes compare by identity: the pickle memo can make one node appear in several
places (or inside itself), and that sharing is kept. ``mark`` is scratch space for
the graph walks (a walk's number, instead of a set of ids: 8 bytes per node).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "BytesNode",
    "Call",
    "DictNode",
    "GlobalRef",
    "JoblibArray",
    "ListNode",
    "Node",
    "SetNode",
    "TupleNode",
    "new_walk",
]


class Node:
    """Base class of every inert node."""

    __slots__ = ()


@dataclass(eq=False, slots=True)
class GlobalRef(Node):
    """A name the stream refers to (GLOBAL, STACK_GLOBAL, INST, OBJ): never imported here."""

    module: str
    name: str
    mark: int = field(default=0, init=False, repr=False, compare=False)

    @property
    def qualified(self) -> str:
        return f"{self.module}.{self.name}"

    def __repr__(self) -> str:
        return f"GlobalRef({self.qualified})"


@dataclass(eq=False, slots=True)
class Call(Node):
    """A call the stream asks for, recorded and never performed by the parser.

    ``how`` is the opcode that asked: ``"reduce"`` (REDUCE: ``callee(*args)``),
    ``"newobj"`` (NEWOBJ / NEWOBJ_EX: ``cls.__new__(cls, *args, **kwargs)``),
    ``"inst"`` (INST / OBJ of protocols 0-1). ``ops`` are the later mutations of
    the result, in stream order: ``("build", state)`` (BUILD),
    ``("setitems", [(k, v), ...])`` and ``("appends", [v, ...])``.
    ``joblib`` is set when the call was joblib's array wrapper and the array
    data that followed it in the file was read.
    """

    callee: Any
    args: Any
    how: str
    kwargs: Any = None
    ops: list[tuple[str, Any]] = field(default_factory=list)
    joblib: JoblibArray | None = None
    mark: int = field(default=0, init=False, repr=False, compare=False)


@dataclass(eq=False, slots=True)
class ListNode(Node):
    items: list[Any] = field(default_factory=list)
    mark: int = field(default=0, init=False, repr=False, compare=False)


@dataclass(eq=False, slots=True)
class TupleNode(Node):
    items: list[Any] = field(default_factory=list)
    mark: int = field(default=0, init=False, repr=False, compare=False)


@dataclass(eq=False, slots=True)
class DictNode(Node):
    pairs: list[tuple[Any, Any]] = field(default_factory=list)
    mark: int = field(default=0, init=False, repr=False, compare=False)


@dataclass(eq=False, slots=True)
class SetNode(Node):
    items: list[Any] = field(default_factory=list)
    frozen: bool = False
    mark: int = field(default=0, init=False, repr=False, compare=False)


@dataclass(eq=False, slots=True)
class BytesNode(Node):
    """``bytes`` (or ``bytearray`` when ``mutable``), a view on the input, not a copy."""

    data: memoryview
    mutable: bool = False
    mark: int = field(default=0, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return self.data.nbytes


@dataclass(eq=False, slots=True)
class JoblibArray(Node):
    """An array joblib wrote right after its ``NumpyArrayWrapper`` in the stream.

    Either raw element bytes (``data``) or, for object arrays, a nested pickle
    stream already parsed into ``nested``.
    """

    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    order: str
    data: memoryview | None = None
    nested: Any = None
    matrix: bool = False


_WALKS = itertools.count(1)


def new_walk() -> int:
    """A fresh number for one walk over a graph: a node is visited when its ``mark``
    equals it."""
    return next(_WALKS)
