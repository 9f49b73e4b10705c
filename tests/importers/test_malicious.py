"""Hostile pickles, joblib files and zip/skops containers: none may run code.

Every payload would create ``canary`` if unpickled (a positive control proves it
for the live ones in a real subprocess); ``sp.convert`` must refuse each with
UntrustedTypesError or FormatError, write nothing, and leave no canary.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pytest
from convert_payloads import LIVE, PAYLOADS, UNICODE_MODULES, Evil

import safepoint as sp
from safepoint.importers.audit import audit
from safepoint.importers.pickle_parser import PickleParser

HERE = Path(__file__).parent
REFUSED = (sp.UntrustedTypesError, sp.FormatError)


def _refused(tmp: Path, data: bytes, name: str = "evil.pkl", **kw: object) -> Exception:
    src = tmp / name
    src.write_bytes(data)
    dst = tmp / "out.sp"
    with pytest.raises(REFUSED) as info:
        sp.convert(src, dst, **kw)  # type: ignore[arg-type]
    assert not dst.exists()
    assert not (tmp / "canary").exists()
    [res] = sp.scan([src])
    assert res.verdict in ("untrusted", "refused")
    assert not (tmp / "canary").exists()
    return info.value


@pytest.mark.slow
def test_positive_control_payloads_are_live(tmp: Path) -> None:
    """The payloads are real: plain pickle.loads runs them (in a throwaway process)."""
    code = (
        "import pickle, sys, warnings; warnings.simplefilter('ignore')\n"
        f"sys.path.insert(0, {str(HERE)!r})\n"
        "import convert_payloads as payloads\n"
        "for name in payloads.LIVE:\n"
        "    c = sys.argv[1] + '/' + name\n"
        "    try:\n"
        "        pickle.loads(payloads.PAYLOADS[name](c))\n"
        "    except Exception:\n"
        "        pass\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp)], check=True, timeout=120)
    assert sorted(p.name for p in tmp.iterdir()) == sorted(LIVE)


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_payload_is_refused(tmp: Path, name: str) -> None:
    exc = _refused(tmp, PAYLOADS[name](str(tmp / "canary")))
    assert "executed" in str(exc) or "refus" in str(exc)


def test_untrusted_names_are_listed(tmp: Path) -> None:
    exc = _refused(tmp, PAYLOADS["os_system_p0"](str(tmp / "canary")))
    assert isinstance(exc, sp.UntrustedTypesError)
    assert exc.types == ["os.system"]
    res = audit(PickleParser(PAYLOADS["getattr_chain"]("c")).parse())
    assert {"builtins.getattr", "builtins.__import__"} <= set(res.untrusted)
    assert any("not a named global" in p for p in res.problems)
    res = audit(PickleParser(PAYLOADS["subprocess_popen"]("c")).parse())
    assert res.untrusted == ["subprocess.Popen"]


@pytest.mark.parametrize("protocol", range(6))
def test_reduce_payload_every_protocol(tmp: Path, protocol: int) -> None:
    data = pickle.dumps(Evil(str(tmp / "canary")), protocol=protocol)
    exc = _refused(tmp, data)
    assert isinstance(exc, sp.UntrustedTypesError)
    assert exc.types == ["posix.system"]


@pytest.mark.parametrize("protocol", range(6))
def test_payload_nested_in_a_model_every_protocol(tmp: Path, protocol: int) -> None:
    from sklearn.linear_model import LinearRegression

    model = LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0])
    model.hidden = [{"x": (1, Evil(str(tmp / "canary")))}]  # type: ignore[attr-defined]
    exc = _refused(tmp, pickle.dumps(model, protocol=protocol))
    assert isinstance(exc, sp.UntrustedTypesError) and exc.types == ["posix.system"]


@pytest.mark.parametrize("module", UNICODE_MODULES)
def test_lookalike_module_names(tmp: Path, module: str) -> None:
    from convert_payloads import unicode_module

    exc = _refused(tmp, unicode_module(str(tmp / "canary"), module))
    assert isinstance(exc, sp.UntrustedTypesError)
    assert exc.types == [f"{module}.system"]


@pytest.mark.parametrize(
    ("payload", "trusted"),
    [
        ("posix_system_p2", ["posix.system"]),
        ("builtins_eval", ["builtins.eval"]),
        ("subprocess_popen", ["subprocess.Popen"]),
        ("getattr_chain", ["builtins.getattr", "builtins.__import__", "os.system"]),
        ("os_system_p0", ["os.system"]),
    ],
)
def test_trusting_a_name_never_calls_a_function(tmp: Path, payload: str, trusted: list[str]):
    """Even a caller who trusts os.system by name gets no call: only classes are
    instantiated, and a call of a call (getattr chains) is refused structurally."""
    _refused(tmp, PAYLOADS[payload](str(tmp / "canary")), trusted=trusted)


def test_subprocess_popen_class_trusted_is_still_not_run(tmp: Path) -> None:
    # Popen *is* a class: trusting it explicitly makes the audit pass, and the
    # constructor refuses because the stream asks to call it with arguments that
    # are not a class state; the canary must not appear either way
    src = tmp / "evil.pkl"
    src.write_bytes(PAYLOADS["subprocess_popen"](str(tmp / "canary")))
    [res] = sp.scan([src])
    assert res.untrusted == ["subprocess.Popen"]


@pytest.mark.parametrize("compress", [0, 3, "lzma", "bz2", "gzip"])
def test_joblib_container(tmp: Path, compress: object) -> None:
    src = tmp / "evil.joblib"
    joblib.dump({"w": np.arange(10.0), "x": Evil(str(tmp / "canary"))}, src, compress=compress)
    exc = _refused(tmp, src.read_bytes(), name="evil.joblib")
    assert isinstance(exc, sp.UntrustedTypesError) and exc.types == ["posix.system"]


def test_joblib_object_array_nested_stream(tmp: Path) -> None:
    # joblib writes object arrays as a nested pickle stream after the wrapper
    src = tmp / "evil.joblib"
    arr = np.array([1.5, Evil(str(tmp / "canary"))], dtype=object)
    joblib.dump({"w": np.arange(3), "o": arr}, src)
    exc = _refused(tmp, src.read_bytes(), name="evil.joblib")
    assert isinstance(exc, sp.UntrustedTypesError) and exc.types == ["posix.system"]


def _zip(members: dict[str, bytes]) -> bytes:
    bio = io.BytesIO()
    with zipfile.ZipFile(bio, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return bio.getvalue()


def test_zip_container(tmp: Path) -> None:
    evil = PAYLOADS["getattr_chain"](str(tmp / "canary"))
    data = _zip({"model/data.pkl": evil, "README": b"hello"})
    _refused(tmp, data, name="evil.zip")
    src = tmp / "two.zip"
    src.write_bytes(_zip({"a.pkl": pickle.dumps({"ok": 1}), "b.pkl": evil}))
    [res] = sp.scan([src])
    assert res.verdict == "refused"
    assert [m.verdict for m in res.members] == ["safe", "refused"]
    assert "builtins.getattr" in res.untrusted


def _skops_node(loader: str, module: str, cls: str, **extra: object) -> dict[str, object]:
    return {"__loader__": loader, "__module__": module, "__class__": cls, **extra}


@pytest.mark.parametrize(
    "root",
    [
        _skops_node("ObjectNode", "os", "system"),
        _skops_node("FunctionNode", "os", "system"),
        _skops_node("TypeNode", "subprocess", "Popen"),
        _skops_node(
            "ReduceNode",
            "os",
            "system",
            __reduce__={"args": _skops_node("TupleNode", "builtins", "tuple", content=[])},
            content=_skops_node("DictNode", "builtins", "dict", content={}),
        ),
        _skops_node("MethodNode", "os", "system", content={"func": "system", "obj": {}}),
        _skops_node("OperatorFuncNode", "operator", "attrgetter", content={}),
        _skops_node("ConstructorFromReduceNode", "builtins", "eval", content={}),
        _skops_node("NoSuchNode", "sklearn.base", "BaseEstimator"),
    ],
)
def test_skops_schema_payloads(tmp: Path, root: dict[str, object]) -> None:
    schema = {**root, "protocol": 2, "_skops_version": "0.16"}
    _refused(tmp, _zip({"schema.json": json.dumps(schema).encode()}), name="evil.skops")


def test_protocol_0_class_instantiation(tmp: Path) -> None:
    # INST/OBJ with a trusted class and no arguments build an instance; with
    # arguments they call the class, which must be trusted as such
    src = tmp / "inst.pkl"
    src.write_bytes(b"(icollections\nOrderedDict\n.")
    report = sp.convert(src, tmp / "ok.sp")
    assert report.verdict == "converted"
    loaded = sp.load(tmp / "ok.sp", trusted=["collections.OrderedDict"])
    assert loaded == {} and type(loaded).__name__ == "OrderedDict"
    # with an argument, INST calls the class: refused for names outside the default set
    src.write_bytes(b"(S'x'\nicollections\nOrderedDict\n.")
    with pytest.raises(REFUSED):
        sp.convert(src, tmp / "no.sp", trusted=["collections.OrderedDict"])


@pytest.mark.parametrize(
    "name", ["getattr_chain", "nested_reduce", "inst_opcode", "stack_global_from_call"]
)
@pytest.mark.slow
def test_real_process_cli(tmp: Path, name: str) -> None:
    """The nastiest payloads through the real CLI in a fresh process."""
    src = tmp / "evil.pkl"
    src.write_bytes(PAYLOADS[name](str(tmp / "canary")))
    for args in (["convert", str(src), str(tmp / "out.sp")], ["scan", str(src)]):
        proc = subprocess.run(
            [sys.executable, "-m", "safepoint.cli", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "SAFEPOINT_QUIET": "1"},
        )
        assert proc.returncode == 1, proc.stderr
        assert not (tmp / "canary").exists()
    assert not (tmp / "out.sp").exists()


def test_real_process_joblib_nested(tmp: Path) -> None:
    src = tmp / "evil.joblib"
    joblib.dump(np.array([Evil(str(tmp / "canary"))], dtype=object), src, compress=3)
    code = (
        "import sys, safepoint as sp\n"
        "try:\n"
        "    sp.convert(sys.argv[1], sys.argv[2])\n"
        "except sp.UntrustedTypesError as e:\n"
        "    print(e.types)\n"
        "    sys.exit(3)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(src), str(tmp / "out.sp")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 3, proc.stderr
    assert "posix.system" in proc.stdout
    assert not (tmp / "canary").exists()


class _Reduced:
    """Pickles as whatever reduce tuple it is given (to craft streams with real objects)."""

    def __init__(self, rv: tuple[object, ...]) -> None:
        self.rv = rv

    def __reduce__(self) -> tuple[object, ...]:
        return self.rv


def test_compiled_structures_are_validated(tmp: Path) -> None:
    """A crafted tree would make scikit-learn's compiled predict read out of bounds:
    the format's bounds validators run on imported trees too."""
    from sklearn.tree import DecisionTreeClassifier
    from sklearn.tree._tree import Tree

    X = np.random.RandomState(0).rand(40, 3)
    model = DecisionTreeClassifier(max_depth=3).fit(X, [0, 1] * 20)
    cls, args, state = model.tree_.__reduce__()
    assert cls is Tree
    nodes = state["nodes"].copy()
    nodes["left_child"][0] = 10**6
    for rv, what in [
        ((Tree, args, {**state, "nodes": nodes}), "child index"),
        ((Tree, args), "exactly one state|state must be a dict"),
    ]:
        src = tmp / "tree.pkl"
        src.write_bytes(pickle.dumps({"tree": _Reduced(rv)}, protocol=4))
        with pytest.raises(sp.FormatError, match=what):
            sp.convert(src, tmp / "t.sp")
        assert not (tmp / "t.sp").exists()
