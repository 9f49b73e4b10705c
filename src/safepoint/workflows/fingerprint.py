"""Fingerprints of step code and parameter values, for automatic invalidation.

A step's *code fingerprint* is a hash of its normalised source: the function is
parsed and its AST dumped without line numbers, docstrings or decorators, so
that comments, blank lines, formatting and docstrings do not count while any
change to what the code does (a constant, a call, an operator) does::

    >>> def a(outputs):
    ...     '''Load.'''
    ...     return outputs["x"] + 1   # add one
    >>> def b(outputs):
    ...     return outputs[ "x" ]+1
    >>> code_fingerprint(a) == code_fingerprint(b)
    True

When the source cannot be read (code built with ``exec``, a lambda sharing a
line with other code), the bytecode and constants are hashed instead: still
blind to comments and formatting, but sensitive to the Python version.

*Value digests* identify parameter values: canonical JSON where the value is
JSON-like, otherwise the safepoint format's content digest.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import math
import textwrap
import types
from collections.abc import Callable
from typing import Any

__all__ = ["code_fingerprint", "normalised_source", "value_digest"]


def _hash(kind: str, payload: bytes) -> str:
    return f"{kind}:{hashlib.blake2b(payload, digest_size=16).hexdigest()}"


class _Normaliser(ast.NodeTransformer):
    """Drops what does not change behaviour: docstrings and the outer decorators."""

    def _strip_docstring(self, node: Any) -> Any:
        body = node.body
        if (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            # keep the body non-empty so that the dump stays a valid function
            node.body = body[1:] or [ast.Pass()]
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> Any:
        self.generic_visit(node)
        return self._strip_docstring(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> Any:
        self.generic_visit(node)
        return self._strip_docstring(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> Any:
        self.generic_visit(node)
        return self._strip_docstring(node)


def _function_node(func: Callable[..., Any]) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    """The parsed definition of ``func``, or None when its source is not available."""
    if getattr(func, "__name__", "") == "<lambda>":
        return None  # getsource gives the whole line, which may hold other code
    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):
        return None
    try:
        tree = ast.parse(textwrap.dedent(source))
    except SyntaxError:
        return None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            # the file may have changed since the import (lines moved): then the
            # source found is not this function's, and the bytecode is used instead
            return node if node.name == func.__name__ else None
    return None


def normalised_source(func: Callable[..., Any]) -> str | None:
    """The AST dump that :func:`code_fingerprint` hashes (None without source)."""
    node = _function_node(inspect.unwrap(func))
    if node is None:
        return None
    # decorators say how a step is registered (its order, its name), not what it
    # computes; the order is part of the workflow, not of the step's code
    node.decorator_list = []
    # the name is the step's identity, stored apart; renaming alone is no code change
    node.name = "_"
    node = _Normaliser().visit(node)
    return ast.dump(node, annotate_fields=True, include_attributes=False)


def _code_parts(code: types.CodeType, top: bool = True) -> list[Any]:
    consts: list[Any] = []
    for i, c in enumerate(code.co_consts):
        if isinstance(c, types.CodeType):
            consts.append(_code_parts(c, top=False))
        elif top and i == 0 and isinstance(c, str):
            # CPython keeps a function's docstring as its first constant
            consts.append("<doc>")
        else:
            consts.append(repr(c))
    return [code.co_code.hex(), consts, list(code.co_names), code.co_argcount]


def code_fingerprint(func: Callable[..., Any]) -> str:
    """A stable hash of what ``func`` does, blind to comments, formatting and docstrings.

    Example:
        >>> def f(x):
        ...     return x * 2
        >>> code_fingerprint(f).startswith("ast:")
        True
    """
    dumped = normalised_source(func)
    if dumped is not None:
        return _hash("ast", dumped.encode())
    code = getattr(inspect.unwrap(func), "__code__", None)
    if code is None:
        # a callable object: its class's __call__ is the code that runs
        call = inspect.getattr_static(type(func), "__call__", None)
        code = getattr(call, "__code__", None)
    if code is None:
        return _hash("repr", repr(func).encode())
    return _hash("bytecode", json.dumps(_code_parts(code)).encode())


class _NotJSON(Exception):
    pass


def _canonical(value: Any) -> Any:
    """A JSON tree that tells values apart by type too (1 vs 1.0 vs True vs '1')."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return {"bool": value}
    if isinstance(value, int):
        return {"int": str(value)}
    if isinstance(value, float):
        return {"float": repr(value) if not math.isnan(value) else "nan"}
    if isinstance(value, list | tuple):
        return {type(value).__name__: [_canonical(v) for v in value]}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise _NotJSON
        return {"dict": [[k, _canonical(v)] for k, v in sorted(value.items())]}
    raise _NotJSON


#: the digest of a parameter that does not exist (so that adding one is a change)
ABSENT = "absent"


def value_digest(value: Any) -> str:
    """A digest that changes when a parameter value changes.

    JSON-like values (numbers, strings, lists, tuples, dicts with str keys) are
    hashed as canonical JSON; anything else (arrays, DataFrames, estimators) by
    the safepoint format's content digest.

    Example:
        >>> value_digest({"alpha": 0.1, "depth": 3}) == value_digest({"depth": 3, "alpha": 0.1})
        True
        >>> value_digest(1) == value_digest(1.0)
        False
    """
    try:
        tree = _canonical(value)
    except _NotJSON:
        pass
    else:
        return _hash("json", json.dumps(tree, separators=(",", ":")).encode())
    import io

    from ..format.api import dump

    return "sp:" + dump(value, io.BytesIO()).digest
