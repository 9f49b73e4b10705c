"""A pickle opcode interpreter that builds an inert graph and never executes anything.

It understands every opcode of protocols 0 to 5. Where ``pickle`` would import a
module (GLOBAL, STACK_GLOBAL, INST, OBJ) it records a :class:`GlobalRef`; where it
would call something (REDUCE, NEWOBJ, NEWOBJ_EX, INST, OBJ) it records a
:class:`Call`; BUILD, SETITEMS and APPENDS on such a call are recorded as its
operations. Persistent ids and the extension registry are refused (they need
code outside the file to mean anything), as are out-of-band buffers (they are not
in the file).

Every declared length is checked against the bytes that remain before anything
is sliced, and byte strings are views on the input, not copies.

``pickle`` runs every call of a stream, wherever its result goes (dropped with POP
or POP_MARK, kept only in the memo, left on the stack under the returned value), so
the parser records every name and call it creates in ``created``, and what STOP left
behind (``leftover``, ``open_marks``): the audit checks all of them, not only what
the returned value contains.

joblib writes the bytes of each numpy array right after the BUILD of its
``NumpyArrayWrapper``; with ``joblib=True`` those bytes are read there (and an
object array's nested pickle stream is parsed), as joblib's unpickler does.

>>> import pickle
>>> p = PickleParser(pickle.dumps({"a": [1, 2.5]}, protocol=5))
>>> root = p.parse()
>>> type(root).__name__, root.pairs[0][0]
('DictNode', 'a')
"""

from __future__ import annotations

import _compat_pickle
import codecs
import struct
from typing import Any

from ..errors import FormatError, LimitExceededError
from .limits import DEFAULT_CONVERT_LIMITS, ConvertLimits
from .nodes import (
    BytesNode,
    Call,
    DictNode,
    GlobalRef,
    JoblibArray,
    ListNode,
    SetNode,
    TupleNode,
)
from .numpy_build import build_dtype, check_shape, is_global, plain

__all__ = ["JOBLIB_WRAPPERS", "PickleParser", "looks_like_pickle"]

HIGHEST_PROTOCOL = 5
_MARK = object()  # marks a MARK on the stack (never a node)

#: joblib's array wrapper, under the names joblib has used
JOBLIB_WRAPPERS = (
    ("joblib.numpy_pickle", "NumpyArrayWrapper"),
    ("sklearn.externals.joblib.numpy_pickle", "NumpyArrayWrapper"),
)

_I4 = struct.Struct("<i")
_U4 = struct.Struct("<I")
_U2 = struct.Struct("<H")
_U8 = struct.Struct("<Q")
_F8 = struct.Struct(">d")


def looks_like_pickle(head: bytes) -> bool:
    """True if ``head`` starts like a pickle (a protocol 2+ header or a protocol 0/1 opcode)."""
    if not head:
        return False
    if head[0] == 0x80:
        return len(head) > 1 and head[1] <= HIGHEST_PROTOCOL
    # protocol 0/1 streams start with one of these opcodes in practice
    return head[:1] in (b"(", b"c", b"]", b"}", b")", b"N", b"I", b"S", b"V", b"l", b"d", b"X")


def _fail(msg: str) -> FormatError:
    return FormatError(
        f"malformed pickle: {msg}. The file is truncated, corrupt or crafted; nothing was "
        "imported or executed"
    )


class PickleParser:
    """Parses one pickle stream of ``data`` starting at ``pos``.

    Attributes after :meth:`parse`: ``pos`` (just past STOP), ``protocol``,
    ``n_opcodes``, ``joblib_arrays`` (how many joblib arrays were read),
    ``created`` (every :class:`GlobalRef` and :class:`Call` the stream made, in
    stream order, those of joblib's nested streams included), ``leftover`` (values
    STOP left on the stack under the result) and ``open_marks`` (MARKs never closed).
    """

    def __init__(
        self,
        data: bytes | bytearray | memoryview,
        pos: int = 0,
        *,
        joblib: bool = False,
        limits: ConvertLimits = DEFAULT_CONVERT_LIMITS,
        nested: bool = False,
    ) -> None:
        self.mv = memoryview(data).cast("B") if not isinstance(data, memoryview) else data
        if self.mv.ndim != 1 or self.mv.itemsize != 1:
            self.mv = self.mv.cast("B")
        self.end = self.mv.nbytes
        if self.end > limits.max_bytes:
            raise LimitExceededError(
                f"the stream has {self.end} bytes (limit {limits.max_bytes}); "
                "raise ConvertLimits.max_bytes if the file is expected to be this large"
            )
        self.pos = pos
        self.joblib = joblib
        self.limits = limits
        self.nested = nested
        self.protocol = 0
        self.n_opcodes = 0
        self.joblib_arrays = 0
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.created: list[Any] = []
        self.n_nodes = 0
        self.leftover = 0
        self.open_marks = 0
        # EMPTY_TUPLE is one object in pickle too: a flood of them costs no memory
        self._empty_tuple = TupleNode()

    # -- reading -----------------------------------------------------------------
    def _take(self, n: int, what: str) -> memoryview:
        if n < 0:
            raise _fail(f"negative length {n} for {what}")
        if n > self.end - self.pos:
            raise _fail(
                f"{what} declares {n} bytes but only {self.end - self.pos} remain "
                "(truncated or crafted file)"
            )
        out = self.mv[self.pos : self.pos + n]
        self.pos += n
        return out

    def _line(self, what: str) -> bytes:
        # protocol 0 arguments end with a newline; search in growing chunks so that a
        # missing newline never makes us copy the whole input at once, and a short line
        # costs a short copy (a flood of one-byte lines stays linear and cheap)
        start = self.pos
        chunk = 64
        while True:
            stop = min(self.end, start + chunk)
            nl = bytes(self.mv[start:stop]).find(b"\n")
            if nl >= 0:
                nl += start
                break
            if stop >= self.end:
                raise _fail(f"{what} is not terminated by a newline")
            start = stop
            chunk = min(chunk * 2, 1 << 20)
        line = bytes(self.mv[self.pos : nl])
        self.pos = nl + 1
        return line

    def _name(self, what: str) -> str:
        try:
            return self._line(what).decode("utf-8")
        except UnicodeDecodeError:
            raise _fail(f"{what} is not valid UTF-8") from None

    def _u8(self, what: str) -> int:
        return self._take(1, what)[0]

    def _struct(self, s: struct.Struct, what: str) -> Any:
        return s.unpack(self._take(s.size, what))[0]

    # -- stack helpers ------------------------------------------------------------
    def _pop(self) -> Any:
        if not self.stack:
            raise _fail("stack underflow (an opcode needs a value that is not there)")
        return self.stack.pop()

    def _top(self) -> Any:
        if not self.stack:
            raise _fail("stack underflow (an opcode needs a value that is not there)")
        return self.stack[-1]

    def _pop_mark(self) -> list[Any]:
        if not self.metastack:
            raise _fail("an opcode needs a MARK that is not there")
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def _push(self, value: Any) -> None:
        self.stack.append(value)

    def _push_new(self, node: Any) -> None:
        self._count_node()
        self.stack.append(node)

    def _count_node(self) -> None:
        # every node costs at least one byte of stream, and ~100 bytes of memory:
        # bounded apart from the file size so that a stream of one-byte container
        # opcodes cannot take memory without end
        self.n_nodes += 1
        if self.n_nodes > self.limits.max_nodes:
            raise LimitExceededError(
                f"the pickle creates more than {self.limits.max_nodes} objects (containers, "
                "calls, names, MARKs); raise ConvertLimits.max_nodes (CLI: --max-nodes) if "
                "the file is expected to hold that many"
            )

    def _memo_get(self, idx: int) -> Any:
        try:
            return self.memo[idx]
        except KeyError:
            raise _fail(f"memo entry {idx} is read before it is written") from None

    def _memo_put(self, idx: int) -> None:
        if idx < 0:
            raise _fail("negative memo index")
        if idx not in self.memo and len(self.memo) >= self.limits.max_nodes:
            raise LimitExceededError(
                f"the pickle memoises more than {self.limits.max_nodes} values; raise "
                "ConvertLimits.max_nodes (CLI: --max-nodes) if the file is expected to hold "
                "that many"
            )
        self.memo[idx] = self._top()

    def _global(self, module: str, name: str) -> GlobalRef:
        if self.protocol < 3:
            # what pickle's fix_imports does for Python 2 names: a table lookup, no import
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        if not module or not name:
            raise _fail("an empty module or global name")
        ref = GlobalRef(module, name)
        self._count_node()
        self.created.append(ref)
        return ref

    def _call(self, callee: Any, args: TupleNode, how: str, kwargs: Any = None) -> Call:
        call = Call(callee, args, how, kwargs=kwargs)
        self._count_node()
        self.created.append(call)
        return call

    def _int_text(self, line: bytes, what: str) -> int:
        text = line.strip()
        if text.endswith(b"L"):
            text = text[:-1]
        if len(text) > self.limits.max_int_bytes:
            raise LimitExceededError(f"{what} has {len(text)} digits")
        try:
            return int(text)
        except ValueError:
            raise _fail(f"{what} is not an integer: {text[:40]!r}") from None

    def _long_bytes(self, n: int, what: str) -> int:
        if n > self.limits.max_int_bytes:
            raise LimitExceededError(f"{what} declares a {n}-byte integer")
        return int.from_bytes(self._take(n, what), "little", signed=True)

    # -- the interpreter ---------------------------------------------------------
    def parse(self) -> Any:
        """Run the stream to its STOP opcode and return the root node."""
        dispatch = _DISPATCH
        mv = self.mv
        end = self.end
        memo = self.memo
        stack = self.stack
        pos = self.pos
        count = 0
        max_memo = self.limits.max_nodes
        try:
            while True:
                if pos >= end:
                    raise _fail("the stream ends before its STOP opcode (truncated file?)")
                op = mv[pos]
                count += 1
                # the opcodes of big dicts and lists (vocabularies, labels) are handled
                # inline; every other one through its method (which may rebind the stack)
                if op == 0x8C and pos + 1 < end:  # SHORT_BINUNICODE
                    n = mv[pos + 1]
                    if n <= end - pos - 2:
                        try:
                            stack.append(str(mv[pos + 2 : pos + 2 + n], "utf-8", "surrogatepass"))
                        except UnicodeDecodeError:
                            raise _fail("SHORT_BINUNICODE is not valid UTF-8") from None
                        pos += 2 + n
                        continue
                elif op == 0x94 and stack and len(memo) < max_memo:  # MEMOIZE
                    memo[len(memo)] = stack[-1]
                    pos += 1
                    continue
                elif op == 0x4A and pos + 4 < end:  # BININT
                    stack.append(int.from_bytes(mv[pos + 1 : pos + 5], "little", signed=True))
                    pos += 5
                    continue
                elif op == 0x4B and pos + 1 < end:  # BININT1
                    stack.append(mv[pos + 1])
                    pos += 2
                    continue
                elif op == 0x4D and pos + 2 < end:  # BININT2
                    stack.append(mv[pos + 1] | (mv[pos + 2] << 8))
                    pos += 3
                    continue
                self.pos = pos + 1
                if op == 0x2E:  # STOP
                    root = self._pop()
                    # pickle ignores these, but the calls that made them have run
                    self.leftover = len(self.stack) + sum(len(s) for s in self.metastack)
                    self.open_marks = len(self.metastack)
                    return root
                handler = dispatch.get(op)
                if handler is None:
                    raise _fail(f"unknown opcode 0x{op:02x} at byte {pos}")
                handler(self)
                stack = self.stack
                pos = self.pos
        finally:
            self.n_opcodes += count

    # protocol 0/1 -----------------------------------------------------------------
    def op_mark(self) -> None:
        self._count_node()
        self.metastack.append(self.stack)
        self.stack = []

    def op_pop(self) -> None:
        if self.stack:
            self.stack.pop()
        else:
            self._pop_mark()

    def op_pop_mark(self) -> None:
        self._pop_mark()

    def op_dup(self) -> None:
        self._push(self._top())

    def op_float(self) -> None:
        line = self._line("FLOAT")
        try:
            self._push(float(line))
        except ValueError:
            raise _fail(f"FLOAT is not a number: {line[:40]!r}") from None

    def op_int(self) -> None:
        line = self._line("INT")
        if line == b"00":
            self._push(False)
        elif line == b"01":
            self._push(True)
        else:
            self._push(self._int_text(line, "INT"))

    def op_long(self) -> None:
        self._push(self._int_text(self._line("LONG"), "LONG"))

    def op_binint(self) -> None:
        self._push(self._struct(_I4, "BININT"))

    def op_binint1(self) -> None:
        self._push(self._u8("BININT1"))

    def op_binint2(self) -> None:
        self._push(self._struct(_U2, "BININT2"))

    def op_none(self) -> None:
        self._push(None)

    def op_persid(self) -> None:
        raise FormatError(
            "the pickle uses persistent ids (PERSID/BINPERSID), references to data kept "
            "outside the stream by custom code (PyTorch files, custom picklers): refused, "
            "safepoint cannot know what they mean. Save the model's data with its "
            "framework's own format (or safepoint's adapters) instead."
        )

    def op_string(self) -> None:
        line = self._line("STRING").rstrip()
        if len(line) < 2 or line[0] != line[-1] or line[:1] not in (b"'", b'"'):
            raise _fail("STRING argument is not quoted")
        try:
            raw = codecs.escape_decode(line[1:-1])[0]
        except ValueError:
            raise _fail("STRING has an invalid escape") from None
        # a Python 2 str: read as latin-1 (what numpy asks of Python 2 pickles)
        self._push(raw.decode("latin-1"))

    def op_binstring(self) -> None:
        n = self._struct(_I4, "BINSTRING")
        self._push(bytes(self._take(n, "BINSTRING")).decode("latin-1"))

    def op_short_binstring(self) -> None:
        n = self._u8("SHORT_BINSTRING")
        self._push(bytes(self._take(n, "SHORT_BINSTRING")).decode("latin-1"))

    def op_unicode(self) -> None:
        line = self._line("UNICODE")
        try:
            self._push(line.decode("raw-unicode-escape"))
        except UnicodeDecodeError:
            raise _fail("UNICODE has an invalid escape") from None

    def _utf8(self, n: int, what: str) -> None:
        raw = self._take(n, what)
        try:
            self._push(str(raw, "utf-8", "surrogatepass"))
        except UnicodeDecodeError:
            raise _fail(f"{what} is not valid UTF-8") from None

    def op_binunicode(self) -> None:
        self._utf8(self._struct(_U4, "BINUNICODE"), "BINUNICODE")

    def op_short_binunicode(self) -> None:
        self._utf8(self._u8("SHORT_BINUNICODE"), "SHORT_BINUNICODE")

    def op_binunicode8(self) -> None:
        self._utf8(self._struct(_U8, "BINUNICODE8"), "BINUNICODE8")

    def op_binfloat(self) -> None:
        self._push(self._struct(_F8, "BINFLOAT"))

    def op_append(self) -> None:
        value = self._pop()
        self._extend(self._top(), [value], "APPEND")

    def op_appends(self) -> None:
        items = self._pop_mark()
        self._extend(self._top(), items, "APPENDS")

    def _extend(self, target: Any, items: list[Any], what: str) -> None:
        if isinstance(target, ListNode):
            target.items.extend(items)
        elif isinstance(target, Call) and target.joblib is None:
            target.ops.append(("appends", items))
        else:
            raise _fail(f"{what} on a {type(target).__name__}")

    def op_build(self) -> None:
        state = self._pop()
        target = self._top()
        if not isinstance(target, Call) or target.joblib is not None:
            raise _fail(f"BUILD on a {type(target).__name__}")
        target.ops.append(("build", state))
        if self.joblib and _is_joblib_wrapper(target):
            self._read_joblib_array(target, state)

    def op_global(self) -> None:
        module = self._name("GLOBAL module")
        name = self._name("GLOBAL name")
        self._push(self._global(module, name))

    def op_stack_global(self) -> None:
        name = self._pop()
        module = self._pop()
        if type(module) is not str or type(name) is not str:
            raise _fail("STACK_GLOBAL needs two strings")
        self._push(self._global(module, name))

    def op_dict(self) -> None:
        items = self._pop_mark()
        if len(items) % 2:
            raise _fail("DICT with an odd number of items")
        self._push_new(DictNode(list(zip(items[::2], items[1::2], strict=True))))

    def op_empty_dict(self) -> None:
        self._push_new(DictNode())

    def op_setitem(self) -> None:
        value = self._pop()
        key = self._pop()
        self._setitems(self._top(), [(key, value)], "SETITEM")

    def op_setitems(self) -> None:
        items = self._pop_mark()
        if len(items) % 2:
            raise _fail("SETITEMS with an odd number of items")
        self._setitems(self._top(), list(zip(items[::2], items[1::2], strict=True)), "SETITEMS")

    def _setitems(self, target: Any, pairs: list[tuple[Any, Any]], what: str) -> None:
        if isinstance(target, DictNode):
            target.pairs.extend(pairs)
        elif isinstance(target, Call) and target.joblib is None:
            target.ops.append(("setitems", pairs))
        else:
            raise _fail(f"{what} on a {type(target).__name__}")

    def op_get(self) -> None:
        self._push(self._memo_get(self._int_text(self._line("GET"), "GET")))

    def op_binget(self) -> None:
        self._push(self._memo_get(self._u8("BINGET")))

    def op_long_binget(self) -> None:
        self._push(self._memo_get(self._struct(_U4, "LONG_BINGET")))

    def op_put(self) -> None:
        self._memo_put(self._int_text(self._line("PUT"), "PUT"))

    def op_binput(self) -> None:
        self._memo_put(self._u8("BINPUT"))

    def op_long_binput(self) -> None:
        self._memo_put(self._struct(_U4, "LONG_BINPUT"))

    def op_memoize(self) -> None:
        self._memo_put(len(self.memo))

    def op_inst(self) -> None:
        module = self._name("INST module")
        name = self._name("INST name")
        args = self._pop_mark()
        self._push(self._call(self._global(module, name), TupleNode(args), "inst"))

    def op_obj(self) -> None:
        items = self._pop_mark()
        if not items:
            raise _fail("OBJ without a class")
        self._push(self._call(items[0], TupleNode(items[1:]), "inst"))

    def op_list(self) -> None:
        self._push_new(ListNode(self._pop_mark()))

    def op_empty_list(self) -> None:
        self._push_new(ListNode())

    def op_tuple(self) -> None:
        self._push_new(TupleNode(self._pop_mark()))

    def op_empty_tuple(self) -> None:
        self._push(self._empty_tuple)

    def op_reduce(self) -> None:
        args = self._pop()
        func = self._pop()
        if not isinstance(args, TupleNode):
            raise _fail("REDUCE arguments must be a tuple")
        self._push(self._call(func, args, "reduce"))

    # protocol 2 -------------------------------------------------------------------
    def op_proto(self) -> None:
        proto = self._u8("PROTO")
        if proto > HIGHEST_PROTOCOL:
            raise FormatError(
                f"pickle protocol {proto} is newer than this Python knows ({HIGHEST_PROTOCOL})"
            )
        self.protocol = proto

    def op_newobj(self) -> None:
        args = self._pop()
        cls = self._pop()
        if not isinstance(args, TupleNode):
            raise _fail("NEWOBJ arguments must be a tuple")
        self._push(self._call(cls, args, "newobj"))

    def op_newobj_ex(self) -> None:
        kwargs = self._pop()
        args = self._pop()
        cls = self._pop()
        if not isinstance(args, TupleNode) or not isinstance(kwargs, DictNode):
            raise _fail("NEWOBJ_EX needs a tuple and a dict")
        self._push(self._call(cls, args, "newobj", kwargs=kwargs if kwargs.pairs else None))

    def op_ext(self) -> None:
        raise FormatError(
            "the pickle uses the copyreg extension registry (EXT1/EXT2/EXT4), codes whose "
            "meaning is set by code in the writing process: refused"
        )

    def op_tuple1(self) -> None:
        self._push_new(TupleNode([self._pop()]))

    def op_tuple2(self) -> None:
        b = self._pop()
        a = self._pop()
        self._push_new(TupleNode([a, b]))

    def op_tuple3(self) -> None:
        c = self._pop()
        b = self._pop()
        a = self._pop()
        self._push_new(TupleNode([a, b, c]))

    def op_newtrue(self) -> None:
        self._push(True)

    def op_newfalse(self) -> None:
        self._push(False)

    def op_long1(self) -> None:
        self._push(self._long_bytes(self._u8("LONG1"), "LONG1"))

    def op_long4(self) -> None:
        n = self._struct(_I4, "LONG4")
        if n < 0:
            raise _fail("LONG4 with a negative length")
        self._push(self._long_bytes(n, "LONG4"))

    # protocol 3 -------------------------------------------------------------------
    def op_binbytes(self) -> None:
        self._push_new(BytesNode(self._take(self._struct(_U4, "BINBYTES"), "BINBYTES")))

    def op_short_binbytes(self) -> None:
        self._push_new(BytesNode(self._take(self._u8("SHORT_BINBYTES"), "SHORT_BINBYTES")))

    # protocol 4 -------------------------------------------------------------------
    def op_binbytes8(self) -> None:
        self._push_new(BytesNode(self._take(self._struct(_U8, "BINBYTES8"), "BINBYTES8")))

    def op_empty_set(self) -> None:
        self._push_new(SetNode())

    def op_additems(self) -> None:
        items = self._pop_mark()
        target = self._top()
        if not isinstance(target, SetNode) or target.frozen:
            raise _fail(f"ADDITEMS on a {type(target).__name__}")
        target.items.extend(items)

    def op_frozenset(self) -> None:
        self._push_new(SetNode(self._pop_mark(), frozen=True))

    def op_frame(self) -> None:
        n = self._struct(_U8, "FRAME")
        if n > self.end - self.pos:
            raise _fail(f"FRAME declares {n} bytes but only {self.end - self.pos} remain")

    # protocol 5 -------------------------------------------------------------------
    def op_bytearray8(self) -> None:
        n = self._struct(_U8, "BYTEARRAY8")
        self._push_new(BytesNode(self._take(n, "BYTEARRAY8"), mutable=True))

    def op_next_buffer(self) -> None:
        raise FormatError(
            "the pickle uses out-of-band buffers (protocol 5 NEXT_BUFFER): their data is not "
            "in the file, so it cannot be imported. Re-pickle without buffer_callback."
        )

    def op_readonly_buffer(self) -> None:
        target = self._top()
        if not isinstance(target, BytesNode):
            raise _fail("READONLY_BUFFER on something that is not a buffer")
        target.mutable = False

    # -- joblib ------------------------------------------------------------------
    def _read_joblib_array(self, wrapper: Call, state_node: Any) -> None:
        if not isinstance(state_node, DictNode):
            raise _fail("joblib array wrapper state must be a dict")
        fields: dict[str, Any] = {}
        for k, v in state_node.pairs:
            if type(k) is not str or k in fields:
                raise _fail("joblib array wrapper state has a bad key")
            fields[k] = v
        subclass = fields.get("subclass")
        matrix = is_global(subclass, ("numpy", "matrix"), ("numpy.matrixlib.defmatrix", "matrix"))
        if not matrix and not is_global(
            subclass, ("numpy", "ndarray"), ("numpy", "memmap"), ("numpy.core.memmap", "memmap")
        ):
            raise FormatError(
                f"joblib array of class {getattr(subclass, 'qualified', subclass)!r}: only plain "
                "numpy arrays and matrices are imported"
            )
        shape = check_shape(plain(fields.get("shape")), self.limits.max_ndim)
        if matrix and len(shape) != 2:
            raise _fail("a joblib numpy matrix must be 2-D")
        order = fields.get("order")
        if order not in ("C", "F"):
            raise _fail(f"joblib array order {order!r}")
        dtype = build_dtype(fields.get("dtype"))
        align = fields.get("numpy_array_alignment_bytes")
        count = 1
        for s in shape:
            count *= s
        if dtype.hasobject:
            if dtype.kind != "O":
                raise FormatError("joblib structured arrays with object fields are not imported")
            if self.nested:
                raise _fail("a joblib object array inside another one")
            sub = PickleParser(self.mv, self.pos, limits=self.limits, nested=True)
            root = sub.parse()
            self.pos = sub.pos
            self.n_opcodes += sub.n_opcodes
            self.created += sub.created
            self.n_nodes += sub.n_nodes
            self.leftover += sub.leftover
            self.open_marks += sub.open_marks
            wrapper.joblib = JoblibArray(dtype, shape, order, nested=root, matrix=matrix)
        else:
            if align is not None:
                if type(align) is not int:
                    raise _fail("joblib alignment must be an integer")
                pad = self._u8("joblib padding length")
                self._take(pad, "joblib padding")
            nbytes = count * dtype.itemsize
            data = self._take(nbytes, f"joblib array {shape} of {dtype}")
            wrapper.joblib = JoblibArray(dtype, shape, order, data=data, matrix=matrix)
        self.joblib_arrays += 1


def _is_joblib_wrapper(call: Call) -> bool:
    if call.how in ("newobj", "inst"):
        return is_global(call.callee, *JOBLIB_WRAPPERS)
    # protocols 0-1: copyreg._reconstructor(NumpyArrayWrapper, object, None)
    return (
        call.how == "reduce"
        and is_global(call.callee, ("copyreg", "_reconstructor"))
        and len(call.args.items) == 3
        and is_global(call.args.items[0], *JOBLIB_WRAPPERS)
    )


_DISPATCH: dict[int, Any] = {
    ord("("): PickleParser.op_mark,
    ord("0"): PickleParser.op_pop,
    ord("1"): PickleParser.op_pop_mark,
    ord("2"): PickleParser.op_dup,
    ord("F"): PickleParser.op_float,
    ord("I"): PickleParser.op_int,
    ord("J"): PickleParser.op_binint,
    ord("K"): PickleParser.op_binint1,
    ord("L"): PickleParser.op_long,
    ord("M"): PickleParser.op_binint2,
    ord("N"): PickleParser.op_none,
    ord("P"): PickleParser.op_persid,
    ord("Q"): PickleParser.op_persid,
    ord("R"): PickleParser.op_reduce,
    ord("S"): PickleParser.op_string,
    ord("T"): PickleParser.op_binstring,
    ord("U"): PickleParser.op_short_binstring,
    ord("V"): PickleParser.op_unicode,
    ord("X"): PickleParser.op_binunicode,
    ord("a"): PickleParser.op_append,
    ord("b"): PickleParser.op_build,
    ord("c"): PickleParser.op_global,
    ord("d"): PickleParser.op_dict,
    ord("}"): PickleParser.op_empty_dict,
    ord("e"): PickleParser.op_appends,
    ord("g"): PickleParser.op_get,
    ord("h"): PickleParser.op_binget,
    ord("i"): PickleParser.op_inst,
    ord("j"): PickleParser.op_long_binget,
    ord("l"): PickleParser.op_list,
    ord("]"): PickleParser.op_empty_list,
    ord("o"): PickleParser.op_obj,
    ord("p"): PickleParser.op_put,
    ord("q"): PickleParser.op_binput,
    ord("r"): PickleParser.op_long_binput,
    ord("s"): PickleParser.op_setitem,
    ord("t"): PickleParser.op_tuple,
    ord(")"): PickleParser.op_empty_tuple,
    ord("u"): PickleParser.op_setitems,
    ord("G"): PickleParser.op_binfloat,
    0x80: PickleParser.op_proto,
    0x81: PickleParser.op_newobj,
    0x82: PickleParser.op_ext,
    0x83: PickleParser.op_ext,
    0x84: PickleParser.op_ext,
    0x85: PickleParser.op_tuple1,
    0x86: PickleParser.op_tuple2,
    0x87: PickleParser.op_tuple3,
    0x88: PickleParser.op_newtrue,
    0x89: PickleParser.op_newfalse,
    0x8A: PickleParser.op_long1,
    0x8B: PickleParser.op_long4,
    ord("B"): PickleParser.op_binbytes,
    ord("C"): PickleParser.op_short_binbytes,
    0x8C: PickleParser.op_short_binunicode,
    0x8D: PickleParser.op_binunicode8,
    0x8E: PickleParser.op_binbytes8,
    0x8F: PickleParser.op_empty_set,
    0x90: PickleParser.op_additems,
    0x91: PickleParser.op_frozenset,
    0x92: PickleParser.op_newobj_ex,
    0x93: PickleParser.op_stack_global,
    0x94: PickleParser.op_memoize,
    0x95: PickleParser.op_frame,
    0x96: PickleParser.op_bytearray8,
    0x97: PickleParser.op_next_buffer,
    0x98: PickleParser.op_readonly_buffer,
}
