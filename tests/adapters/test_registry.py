"""The adapter registry: declared by name, frameworks imported only when used, exact trust."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import safepoint as sp
from safepoint.adapters._common import adapter_class, trusts, type_ref
from safepoint.adapters.registry import (
    Adapter,
    adapters,
    is_trusted_adapter_type,
    register_adapter,
    trust_tokens,
)

FRAMEWORKS = ("xgboost", "lightgbm", "torch", "pyspark", "h2o", "skl2onnx", "onnxruntime")


@pytest.mark.slow
def test_no_framework_is_imported_by_safepoint(tmp_path):
    code = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        import safepoint as sp
        from sklearn.linear_model import LinearRegression
        m = LinearRegression().fit(np.eye(3), [1.0, 2.0, 3.0])
        sp.load(sp.dumps({{"m": m, "w": np.arange(3)}}))
        sp.Store({str(tmp_path / "s")!r}).put("a/b", m)
        assert sp.adapters.registry.adapters()
        loaded = [f for f in {FRAMEWORKS!r} if f in sys.modules]
        print("LOADED", loaded)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "LOADED []" in out.stdout, out.stdout + out.stderr


def test_inspect_of_an_adapter_file_imports_nothing(tmp_path):
    xgb = pytest.importorskip("xgboost")
    import numpy as np

    booster = xgb.train({"nthread": 1}, xgb.DMatrix(np.eye(4), [0, 1, 0, 1]), 2)
    path = tmp_path / "b.sp"
    sp.dump(booster, path)
    code = (
        "import sys, safepoint as sp\n"
        f"info = sp.inspect({str(path)!r})\n"
        "print(info.types[0]['trusted'], 'xgboost' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]


def test_builtin_adapters_are_declared():
    names = {a.name for a in adapters()}
    assert {"xgboost", "lightgbm", "torch", "spark", "h2o"} <= names
    assert is_trusted_adapter_type("xgboost.core.Booster")
    assert not is_trusted_adapter_type("xgboost.core.DMatrix")
    assert not is_trusted_adapter_type("os.system")


class Gadget:
    """A stand-in for a framework class with its own byte format."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def to_bytes(self) -> bytes:
        return b"GADGET" + self.payload

    @classmethod
    def from_bytes(cls, data: bytes) -> Gadget:
        if not data.startswith(b"GADGET"):
            raise ValueError("not a gadget")
        return cls(data[6:])


class GadgetHandler:
    @staticmethod
    def encode(obj, enc):
        return {"t": type_ref(enc, obj), "b": enc.buffer(obj.to_bytes())}

    @staticmethod
    def decode(node, dec):
        cls = adapter_class(node, dec, (f"{__name__}.Gadget",))
        return cls.from_bytes(dec.raw(node["b"]))


HANDLERS = {"test.gadget": GadgetHandler}


def test_a_third_party_adapter_plugs_in():
    register_adapter(
        Adapter(
            name="gadget",
            module=__name__,
            types={"test.gadget": [f"{__name__}.Gadget"]},
            distribution="gadget",
            stores="gadget bytes",
        )
    )
    data = sp.dumps({"g": Gadget(b"\x00\x01")})
    back = sp.loads(data)["g"]
    assert isinstance(back, Gadget) and back.payload == b"\x00\x01"
    assert sp.inspect(data).types == [
        {"name": f"{__name__}.Gadget", "kind": "adapter", "trusted": True}
    ]


class Raw:
    """A stand-in for a framework object whose native bytes its loader would execute."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


class RawHandler:
    @staticmethod
    def encode(obj, enc):
        return {"t": type_ref(enc, obj), "b": enc.buffer(obj.payload)}

    @staticmethod
    def decode(node, dec):
        cls = adapter_class(node, dec, (f"{__name__}.Raw",))
        if not trusts(dec, "rawlib:exec"):
            raise sp.UntrustedTypesError(["rawlib:exec"])
        return cls(dec.raw(node["b"]))


HANDLERS["test.raw"] = RawHandler


def test_a_trust_token_reaches_the_handler_only_through_trusted():
    register_adapter(
        Adapter(
            name="rawlib",
            module=__name__,
            types={"test.raw": [f"{__name__}.Raw"]},
            distribution="rawlib",
            tokens={"rawlib:exec": "run the payload"},
        )
    )
    assert trust_tokens()["rawlib:exec"] == "run the payload"
    assert "h2o:binary" in trust_tokens()
    data = sp.dumps([Raw(b"x")])
    with pytest.raises(sp.UntrustedTypesError, match="rawlib:exec"):
        sp.loads(data)
    assert sp.loads(data, trusted=["rawlib:exec"])[0].payload == b"x"
    # a token trusts nothing in the types table, and a types-table name is no token
    assert sp.untrusted_types(data) == []
    with pytest.raises(sp.UntrustedTypesError):
        sp.loads(data, trusted=[f"{__name__}.Raw"])


@pytest.mark.parametrize("tokens", [{"h2o:binary": "again"}, {"nocolon": "x"}, {"a:b:c": "x"}])
def test_trust_tokens_are_unique_and_well_formed(tokens):
    with pytest.raises(ValueError, match="token"):
        register_adapter(
            Adapter(
                name=f"t{len(tokens)}{next(iter(tokens))}",
                module=__name__,
                types={},
                distribution="x",
                tokens=tokens,
            )
        )


def test_save_only_wrappers_are_not_trusted():
    assert not is_trusted_adapter_type("safepoint.adapters.h2o.WithBinary")
    assert is_trusted_adapter_type("safepoint.adapters.h2o.H2OMojo")
