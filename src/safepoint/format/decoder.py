"""Manifest nodes + buffers -> object tree (the *construct* step, after the audit)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import FormatError, LimitExceededError
from .construction import BuildRecord
from .registry import ReplacedType
from .registry import _by_tag as _BY_TAG

if TYPE_CHECKING:
    from .reader import BufferStream, Reader
    from .trust import TrustPolicy

__all__ = ["Decoder"]

_SCALARS = (type(None), bool, int, float, str)
_OBJECT_TAGS = frozenset({"obj", "red", "pyx"})
_IN_PROGRESS = object()


class Decoder(BuildRecord):
    """Builds objects from validated nodes.

    ``resolved`` holds, for each entry of the manifest's types table, the object
    the audit resolved and approved; handlers may reach a class only through it.
    """

    def __init__(
        self,
        reader: Reader,
        resolved: list[Any],
        *,
        policy: TrustPolicy | None = None,
        mmap: bool = False,
        mmap_threshold: int = 1 << 20,
    ) -> None:
        if policy is None:
            from .trust import TrustPolicy

            policy = TrustPolicy()
        super().__init__(policy)
        self.reader = reader
        self.resolved = resolved
        self.mmap = mmap
        self.mmap_threshold = mmap_threshold
        self.max_depth = reader.limits.max_depth
        self.max_items = reader.limits.max_items
        self._shared: dict[int, Any] = {}
        self._depth = 0
        self._walking = False
        self._used_buffers: set[int] = set()
        #: > 0 while decoding arrays that bounds checks rely on (decode_structural)
        self._structural = 0
        #: id -> array, for the column arrays of object tables: every view of one of
        #: them that the decode made is a record-aligned row slice (validators may
        #: check the whole array instead of its many slices)
        self.row_sources: dict[int, np.ndarray[Any, Any]] = {}

    # -- helpers for handlers -------------------------------------------------
    def fail(self, msg: str) -> FormatError:
        return FormatError(f"malformed manifest: {msg}")

    def field(self, node: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
        try:
            value = node[key]
        except (KeyError, TypeError):
            raise self.fail(f"node {node.get('@')!r} lacks field {key!r}") from None
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(f"field {key!r} of node {node.get('@')!r} has the wrong type")
        return value

    def items(self, node: dict[str, Any], key: str = "v") -> list[Any]:
        value = self.field(node, key, list)
        if len(value) > self.max_items:
            raise LimitExceededError(f"a container declares {len(value)} items")
        return value

    def type_of(self, node: dict[str, Any]) -> Any:
        idx = self.field(node, "t", int)
        if not 0 <= idx < len(self.resolved):
            raise self.fail(f"type index {idx} out of range")
        return self.resolved[idx]

    def array(
        self,
        index: int,
        dtype: np.dtype[Any],
        shape: tuple[int, ...],
        *,
        structural: bool = False,
    ) -> np.ndarray[Any, Any]:
        """The array stored in buffer ``index``; each buffer may be used once.

        ``structural`` arrays (indices used in bounds checks) are always copied
        into memory, never mapped, so that the file cannot change them later.
        """
        used = self._used_buffers
        if type(index) is not int or index in used:
            self._use(index)  # raises: not an index, or a buffer used before
        used.add(index)
        return self.reader.read_array(
            index,
            dtype,
            shape,
            mmap=self.mmap and not structural and not self._structural,
            mmap_threshold=self.mmap_threshold,
        )

    def decode_structural(self, node: Any) -> Any:
        """Decode ``node`` with every array in it read into private memory, never
        mapped: indices, pointers and codes that a bounds check is about to vouch for
        (a mapped page could change after the check)."""
        self._structural += 1
        try:
            return self.decode(node)
        finally:
            self._structural -= 1

    def stream(self, index: int, dtype: np.dtype[Any], shape: tuple[int, ...]) -> BufferStream:
        """The array stored in buffer ``index``, to be read piece by piece
        (:meth:`Reader.stream`); like :meth:`array`, each buffer may be used once."""
        self._use(index)
        return self.reader.stream(index, dtype, shape)

    def _use(self, index: int) -> None:
        if not isinstance(index, int) or isinstance(index, bool):
            raise self.fail("buffer index must be an integer")
        if index in self._used_buffers:
            raise self.fail(f"buffer {index} is referenced twice")
        self._used_buffers.add(index)

    def raw(self, index: int) -> bytes:
        self._use(index)
        return self.reader.read_bytes(index)

    # -- the walk -------------------------------------------------------------
    def decode(self, node: Any) -> Any:
        if type(node) is not dict:
            if type(node) in _SCALARS:
                return node
            if not self._walking:
                return self._decode_top(node)
            raise self.fail(f"unexpected {type(node).__name__} where a node was expected")
        if not self._walking:
            return self._decode_top(node)
        tag = node.get("@")
        if tag == "memo":
            return self._memo(node)
        # the registry's table itself (handler_for_tag's): one call less per node
        handler = _BY_TAG.get(tag) if type(tag) is str else None
        if handler is None:
            raise self.fail(f"unknown node tag {tag!r}")
        if self._depth >= self.max_depth:
            raise LimitExceededError(
                f"the object tree nests deeper than {self.max_depth} levels "
                "(raise Limits.max_depth if the file is trusted)"
            )
        self._depth += 1
        try:
            if tag in _OBJECT_TAGS:
                cls = self.type_of(node)
                if isinstance(cls, ReplacedType):
                    # a class removed from its library: rebuilt by a type migration
                    return cls.build(node, self)
            return handler.decode(node, self)
        finally:
            self._depth -= 1

    def _decode_top(self, node: Any) -> Any:
        """The outermost call: the interpreter's stack may run out before
        ``max_depth`` (each level costs a few Python frames); that is a limit too."""
        self._walking = True
        try:
            value = self.decode(node)
            self.finish()
            return value
        except RecursionError:
            raise LimitExceededError(
                "the object tree nests too deeply for the Python stack (before reaching "
                f"Limits.max_depth={self.max_depth}); flatten the structure, or load it "
                "with a higher sys.setrecursionlimit if the file is trusted"
            ) from None
        finally:
            self._walking = False

    def _memo(self, node: dict[str, Any]) -> Any:
        i = self.field(node, "i", int)
        shared = self.reader.manifest_shared
        if not 0 <= i < len(shared):
            raise self.fail(f"shared reference {i} out of range")
        have = self._shared.get(i, None)
        if have is _IN_PROGRESS:
            raise self.fail("a reference cycle (refused)")
        if i in self._shared:
            self.shared(have)
            return have
        target = shared[i]
        if type(target) is not dict or target.get("@") == "memo":
            raise self.fail(f"shared entry {i} is not an object node")
        self._shared[i] = _IN_PROGRESS
        try:
            value = self.decode(target)
        except BaseException:
            del self._shared[i]
            raise
        self._shared[i] = value
        return value
