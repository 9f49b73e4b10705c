"""Hand-assembled pickle streams for the hostile-input tests.

Each builder returns the bytes of a stream that, given to ``pickle.loads``, would
create the file ``canary`` (a harmless stand-in for arbitrary code).
"""

from __future__ import annotations

import struct


def g0(module: str, name: str) -> bytes:
    """GLOBAL (protocols 0-3)."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def u(text: str) -> bytes:
    """BINUNICODE."""
    raw = text.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(raw)) + raw


def s0(text: str) -> bytes:
    """STRING (protocol 0)."""
    return b"S" + repr(text).encode() + b"\n"


def sg(module: str, name: str) -> bytes:
    """STACK_GLOBAL (protocol 4)."""
    return u(module) + u(name) + b"\x93"


def touch(canary: str) -> str:
    return f"touch {canary}"


def python_code(canary: str) -> str:
    return f"open({canary!r}, 'w').write('pwned')"


def os_system_p0(c: str) -> bytes:
    return g0("os", "system") + b"(" + s0(touch(c)) + b"tR."


def posix_system_p2(c: str) -> bytes:
    return b"\x80\x02" + g0("posix", "system") + u(touch(c)) + b"\x85R."


def subprocess_popen(c: str) -> bytes:
    return b"\x80\x02" + g0("subprocess", "Popen") + b"(" + b"(" + u("touch") + u(c) + b"lt" + b"R."


def builtins_eval(c: str) -> bytes:
    return b"\x80\x04" + sg("builtins", "eval") + u(python_code(c)) + b"\x85R."


def builtins_exec(c: str) -> bytes:
    return b"\x80\x04" + sg("builtins", "exec") + u(python_code(c)) + b"\x85R."


def getattr_chain(c: str) -> bytes:
    # builtins.getattr(builtins.__import__('os'), 'system')('touch canary')
    imp = g0("builtins", "__import__") + b"(" + s0("os") + b"tR"
    func = g0("builtins", "getattr") + b"(" + imp + s0("system") + b"tR"
    return func + b"(" + s0(touch(c)) + b"tR."


def nested_reduce(c: str) -> bytes:
    # a trusted-looking estimator whose state holds the call
    inner = g0("os", "system") + u(touch(c)) + b"\x85R"
    return (
        b"\x80\x02"
        + g0("sklearn.linear_model._logistic", "LogisticRegression")
        + b")\x81}"
        + u("coef_")
        + inner
        + b"sb."
    )


def stack_global_from_call(c: str) -> bytes:
    # module name computed by a call ('o' + 's') before STACK_GLOBAL
    name = sg("_operator", "add") + u("o") + u("s") + b"\x86R"
    return b"\x80\x04" + name + u("system") + b"\x93" + u(touch(c)) + b"\x85R."


def stack_global_memo(c: str) -> bytes:
    # module and name strings go through the memo and DUP before STACK_GLOBAL
    return (
        b"\x80\x04"
        + u("os")
        + b"\x94"  # MEMOIZE 0
        + b"0"  # POP
        + b"h\x00"  # BINGET 0
        + u("system")
        + b"\x93"
        + u(touch(c))
        + b"\x85R."
    )


def unicode_module(c: str, module: str) -> bytes:
    return b"\x80\x04" + sg(module, "system") + u(touch(c)) + b"\x85R."


def inst_opcode(c: str) -> bytes:
    # protocol 0 INST: (args... i module\nname\n
    return b"(" + s0(touch(c)) + b"ios\nsystem\n."


def obj_opcode(c: str) -> bytes:
    # protocol 1 OBJ: MARK cls args... OBJ
    return b"(" + g0("os", "system") + s0(touch(c)) + b"o."


def memo_overwrite(c: str) -> bytes:
    # a trusted name is memoized, then the memo slot is overwritten with os.system
    return (
        b"\x80\x02"
        + g0("collections", "OrderedDict")
        + b"q\x00"  # BINPUT 0
        + b"0"  # POP
        + g0("os", "system")
        + b"q\x00"  # BINPUT 0 again
        + b"0"
        + b"h\x00"  # BINGET 0 -> os.system
        + u(touch(c))
        + b"\x85R."
    )


def reconstructor_smuggle(c: str) -> bytes:
    # copyreg._reconstructor(os.system, object, None) as if os.system were a class
    return (
        b"\x80\x02"
        + g0("copyreg", "_reconstructor")
        + g0("os", "system")
        + g0("builtins", "object")
        + b"N\x87R."
    )


def sklearn_helper_smuggle(c: str) -> bytes:
    # scikit-learn's newObj helper asked to build a class of another module
    return b"\x80\x02" + g0("sklearn.neighbors._kd_tree", "newObj") + g0("os", "system") + b"\x85R."


def build_on_class(c: str) -> bytes:
    # BUILD applied to a class object (pickle would setattr on the class)
    return (
        b"\x80\x02"
        + g0("sklearn.base", "BaseEstimator")
        + b"}"
        + u("__reduce__")
        + g0("os", "system")
        + b"sb."
    )


def qualname_traversal(c: str) -> bytes:
    # a trusted module, but a dotted name that walks to os.system through it
    return b"\x80\x04" + sg("sklearn", "os.system") + u(touch(c)) + b"\x85R."


def numpy_reconstruct_smuggle(c: str) -> bytes:
    # numpy's array reconstructor with a hostile "subclass"
    return (
        b"\x80\x02"
        + g0("numpy._core.multiarray", "_reconstruct")
        + g0("os", "system")
        + b"K\x00\x85"
        + u(touch(c))
        + b"\x87R."
    )


def persid(c: str) -> bytes:
    return b"\x80\x02" + u(touch(c)) + b"Q."


def ext_code(c: str) -> bytes:
    return b"\x80\x02\x82\x01."


def _call(c: str) -> bytes:
    """os.system('touch canary') as a GLOBAL + REDUCE (protocol 2 opcodes)."""
    return g0("os", "system") + u(touch(c)) + b"\x85R"


def dropped_pop(c: str) -> bytes:
    # the call's result is thrown away with POP; the pickle returns an empty dict
    return b"\x80\x02" + _call(c) + b"0}."


def dropped_pop_mark(c: str) -> bytes:
    # the call runs inside a MARK that POP_MARK discards
    return b"\x80\x02(" + _call(c) + b"1}."


def memo_only(c: str) -> bytes:
    # the result is memoised, popped, and never fetched again
    return b"\x80\x02" + _call(c) + b"q\x07" + b"0}."


def leftover_stack(c: str) -> bytes:
    # the result stays on the stack under the returned value (pickle ignores it)
    return b"\x80\x02" + _call(c) + b"}."


def leftover_mark(c: str) -> bytes:
    # the result stays under a MARK that is never closed
    return b"\x80\x02(" + _call(c) + b"}."


def dropped_inst(c: str) -> bytes:
    # protocol 0 INST (imports and calls os.system) whose result is popped
    return b"(" + s0(touch(c)) + b"ios\nsystem\n0(dp0\n."


def dropped_obj(c: str) -> bytes:
    # protocol 1 OBJ whose result is popped
    return b"(" + g0("os", "system") + s0(touch(c)) + b"o0}."


def dropped_in_trusted_call(c: str) -> bytes:
    # the call is an argument list item of a list that is itself dropped
    return b"\x80\x02](" + _call(c) + b"e0}."


def fickling_exec_first(c: str) -> bytes:
    """What fickling's ``insert_python_exec(code, run_first=True)`` writes: a
    builtins.exec call right after the header, its result popped."""
    import pickle

    base = pickle.dumps({"model": [1, 2, 3]}, protocol=4)
    assert base[2] == 0x95  # PROTO, then FRAME with its 8-byte length
    exec_call = g0("builtins", "exec") + b"(" + u(python_code(c)) + b"tR0"
    frame = struct.unpack("<Q", base[3:11])[0] + len(exec_call)
    return base[:3] + struct.pack("<Q", frame) + exec_call + base[11:]


def fickling_exec_last(c: str) -> bytes:
    """The same call inserted just before STOP (``run_first=False``)."""
    import pickle

    base = pickle.dumps({"model": [1, 2, 3]}, protocol=4)
    return base[:-1] + g0("builtins", "exec") + b"(" + u(python_code(c)) + b"tR0."


def concatenated(c: str) -> bytes:
    # a benign pickle, then a second one that calls os.system (a loop of pickle.load
    # over the file runs both)
    import pickle

    return pickle.dumps({"ok": 1}, protocol=4) + b"\x80\x02" + _call(c) + b"."


def concatenated_requests(c: str) -> bytes:
    # the case of the review: the second pickle calls requests.get
    import pickle

    second = b"\x80\x04" + sg("requests", "get") + u("http://127.0.0.1:9/x") + b"\x85R."
    return pickle.dumps({"ok": 1}, protocol=4) + second


def trailing_bytes(c: str) -> bytes:
    import pickle

    return pickle.dumps({"ok": 1}, protocol=4) + b"\x00junk after STOP"


def dropped_global(c: str) -> bytes:
    # GLOBAL alone imports a module (running its import-time code); popped here
    return b"\x80\x02" + g0("antigravity", "webbrowser") + b"0}."


def dropped_newobj(c: str) -> bytes:
    # NEWOBJ (cls.__new__) of a class outside the allowlist, popped
    return b"\x80\x02" + g0("subprocess", "Popen") + b")\x81" + b"0}."


def dropped_newobj_ex(c: str) -> bytes:
    return b"\x80\x04" + sg("subprocess", "Popen") + b")}\x92" + b"0}."


def dropped_stack_global_memo(c: str) -> bytes:
    # STACK_GLOBAL from memoised strings, the call's result popped
    return (
        b"\x80\x04"
        + u("os")
        + b"\x94"
        + u("system")
        + b"\x94"
        + b"00"
        + b"h\x00h\x01\x93"
        + u(touch(c))
        + b"\x85R0}."
    )


def dropped_build(c: str) -> bytes:
    # an allowlisted estimator whose state (built by BUILD) holds the call, then popped
    return (
        b"\x80\x02"
        + g0("sklearn.linear_model._base", "LinearRegression")
        + b")\x81}"
        + u("x")
        + _call(c)
        + b"sb0}."
    )


#: payloads whose call never reaches the returned object (each one a variant of the
#: class "a call the returned value does not contain")
DROPPED = {
    "dropped_pop": dropped_pop,
    "dropped_pop_mark": dropped_pop_mark,
    "memo_only": memo_only,
    "leftover_stack": leftover_stack,
    "leftover_mark": leftover_mark,
    "dropped_inst": dropped_inst,
    "dropped_obj": dropped_obj,
    "dropped_in_trusted_call": dropped_in_trusted_call,
    "fickling_exec_first": fickling_exec_first,
    "fickling_exec_last": fickling_exec_last,
    "concatenated": concatenated,
    "concatenated_requests": concatenated_requests,
    "trailing_bytes": trailing_bytes,
    "dropped_global": dropped_global,
    "dropped_newobj": dropped_newobj,
    "dropped_newobj_ex": dropped_newobj_ex,
    "dropped_stack_global_memo": dropped_stack_global_memo,
    "dropped_build": dropped_build,
}
#: the ones that create the canary under plain pickle (``concatenated`` needs a second
#: ``pickle.load`` of the same file, done by the positive control)
DROPPED_LIVE = [
    "dropped_pop",
    "dropped_pop_mark",
    "memo_only",
    "leftover_stack",
    "leftover_mark",
    "dropped_inst",
    "dropped_obj",
    "dropped_in_trusted_call",
    "fickling_exec_first",
    "fickling_exec_last",
    "concatenated",
    "dropped_stack_global_memo",
    "dropped_build",
]


PAYLOADS = {
    "os_system_p0": os_system_p0,
    "posix_system_p2": posix_system_p2,
    "subprocess_popen": subprocess_popen,
    "builtins_eval": builtins_eval,
    "builtins_exec": builtins_exec,
    "getattr_chain": getattr_chain,
    "nested_reduce": nested_reduce,
    "stack_global_from_call": stack_global_from_call,
    "stack_global_memo": stack_global_memo,
    "inst_opcode": inst_opcode,
    "obj_opcode": obj_opcode,
    "memo_overwrite": memo_overwrite,
    "reconstructor_smuggle": reconstructor_smuggle,
    "sklearn_helper_smuggle": sklearn_helper_smuggle,
    "build_on_class": build_on_class,
    "qualname_traversal": qualname_traversal,
    "numpy_reconstruct_smuggle": numpy_reconstruct_smuggle,
    "persid": persid,
    "ext_code": ext_code,
}

#: payloads that really create the canary under pickle.loads (checked by a positive control)
LIVE = [
    "os_system_p0",
    "posix_system_p2",
    "subprocess_popen",
    "builtins_eval",
    "builtins_exec",
    "getattr_chain",
    "nested_reduce",
    "stack_global_from_call",
    "stack_global_memo",
    "inst_opcode",
    "obj_opcode",
    "memo_overwrite",
    "qualname_traversal",
]

#: module names that look like os/posix but are not, or hide characters
UNICODE_MODULES = [
    "\u043es",  # Cyrillic o + s
    "os\u200b",  # zero-width space
    "\uff4f\uff53",  # fullwidth o s
    "os\x00",
    " os",
    "OS",
    "posix\n",
]


class Evil:
    """Pickles as a call of os.system (pickling it runs nothing)."""

    def __init__(self, canary: str) -> None:
        self.canary = canary

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, (touch(self.canary),))
