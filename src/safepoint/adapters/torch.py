"""PyTorch: tensors as raw little-endian buffers in the safetensors layout; modules rebuilt by
allowlisted factories; never ``torch.load`` of a pickle.

* ``torch.Tensor`` / ``torch.nn.Parameter``: one 64-byte aligned buffer per tensor holding
  exactly the bytes safetensors stores for it (C order, little endian), with the safetensors
  dtype code (``F32``, ``BF16``, ...) and shape in the node. A ``state_dict`` (an
  ``OrderedDict`` of tensors) is therefore a safetensors file in all but its header:
  :func:`to_safetensors` writes that header and streams the buffers, *without importing
  torch*, and :func:`save_safetensors` / :func:`load_safetensors` talk to the ``safetensors``
  library directly.
* ``torch.nn.Module``: a module is stored as (class, constructor config, state_dict). Only
  classes with a factory load: the standard layers listed in :data:`STANDARD_LAYERS` (their
  config is read from the attributes named like their constructor arguments, and checked by
  rebuilding the layer on the ``meta`` device at save time) and classes registered with
  :func:`register_module` by the *loading* program. Modules are built on the ``meta`` device
  and receive the file's tensors with ``load_state_dict(strict=True, assign=True)``, so a
  crafted config cannot make the loader allocate more than the file holds.

Example:
    >>> import torch, safepoint as sp                                  # doctest: +SKIP
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    >>> sp.dump(net, "net.sp"); net2 = sp.load("net.sp")              # doctest: +SKIP
    >>> sp.adapters.torch.save_safetensors(net, "net.safetensors")    # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import json
import math
import os
import struct
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import FormatError, SerializationError
from ..format import registry as _fmt_registry
from ._common import adapter_class, import_framework, type_ref
from ._torch_names import CONTAINERS, STANDARD_LAYERS, TENSOR_TYPES
from .registry import trust_adapter_type

if TYPE_CHECKING:
    from ..format.decoder import Decoder
    from ..format.encoder import Encoder

__all__ = [
    "HANDLERS",
    "STANDARD_LAYERS",
    "load_safetensors",
    "register_module",
    "save_safetensors",
    "to_safetensors",
]

#: safetensors dtype code -> (torch dtype name, item size)
DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("float64", 8),
    "F32": ("float32", 4),
    "F16": ("float16", 2),
    "BF16": ("bfloat16", 2),
    "I64": ("int64", 8),
    "I32": ("int32", 4),
    "I16": ("int16", 2),
    "I8": ("int8", 1),
    "U8": ("uint8", 1),
    "BOOL": ("bool", 1),
    "C64": ("complex64", 8),
}
_CODES = {v[0]: k for k, v in DTYPES.items()}

_SKIP_ARGS = {"self", "device", "dtype", "_weight", "_freeze"}
_RNN_ARGS = (
    "input_size",
    "hidden_size",
    "num_layers",
    "bias",
    "batch_first",
    "dropout",
    "bidirectional",
)

#: class name -> (factory, config getter) registered by the program (see register_module)
_FACTORIES: dict[str, tuple[Callable[..., Any], Callable[[Any], dict[str, Any]] | None]] = {}


def _torch() -> Any:
    return import_framework("torch", "torch", "pip install torch==2.13.0 safetensors")


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# -- tensors ------------------------------------------------------------------------------
def _tensor_bytes(t: Any) -> tuple[str, list[int], memoryview]:
    torch = _torch()
    if t.layout != torch.strided or t.is_quantized or t.device.type == "meta":
        raise SerializationError(
            f"a {t.layout} / quantized / meta tensor cannot be stored: convert it to a dense "
            "tensor first (t.to_dense(), t.dequantize())"
        )
    code = _CODES.get(str(t.dtype).removeprefix("torch."))
    if code is None:
        raise SerializationError(
            f"tensors of dtype {t.dtype} are not supported (safetensors dtypes: "
            f"{', '.join(sorted(_CODES))}); convert it with .to(...)"
        )
    c = t.detach().cpu().contiguous()
    shape = list(c.shape)
    if c.dtype == torch.bfloat16:
        c = c.view(torch.int16)
    arr = c.numpy()
    if arr.dtype.byteorder == ">":  # pragma: no cover - big-endian hosts
        arr = arr.byteswap().view(arr.dtype.newbyteorder("<"))
    return code, shape, memoryview(arr.reshape(-1).view("u1"))


def _tensor_from(raw: bytes, code: str, shape: list[int], dec: Decoder) -> Any:
    torch = _torch()
    if code not in DTYPES:
        raise dec.fail(f"unknown tensor dtype {code!r}")
    if not all(type(s) is int and 0 <= s < 2**62 for s in shape) or len(shape) > 64:
        raise dec.fail("a tensor shape must be non-negative integers")
    name, size = DTYPES[code]
    if math.prod(shape) * size != len(raw):
        raise dec.fail(f"a {code} tensor of shape {shape} needs {math.prod(shape) * size} bytes")
    if not raw:
        return torch.empty(shape, dtype=getattr(torch, name))
    # a writable copy: torch.frombuffer shares memory with the bytes it is given
    return torch.frombuffer(bytearray(raw), dtype=getattr(torch, name)).reshape(shape)


class TensorHandler:
    """``torch.Tensor`` and ``torch.nn.Parameter``: safetensors dtype, shape, one buffer."""

    @staticmethod
    def encode(obj: Any, enc: Encoder) -> dict[str, Any]:
        code, shape, data = _tensor_bytes(obj)
        node: dict[str, Any] = {"t": type_ref(enc, obj), "dt": code, "sh": shape}
        node["b"] = enc.buffer(data)
        if obj.requires_grad:
            node["rg"] = True
        return node

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        cls = adapter_class(node, dec, TENSOR_TYPES)
        shape = dec.field(node, "sh", list)
        t = _tensor_from(dec.raw(dec.field(node, "b", int)), dec.field(node, "dt", str), shape, dec)
        rg = bool(node.get("rg", False))
        if cls.__name__ == "Parameter":
            return _torch().nn.Parameter(t, requires_grad=rg)
        return t.requires_grad_(rg) if rg else t


# -- modules ------------------------------------------------------------------------------
def _init_args(cls: type) -> list[str]:
    torch = _torch()
    if issubclass(cls, torch.nn.RNNBase):
        extra = ["proj_size"] if cls.__name__ == "LSTM" else []
        extra += ["nonlinearity"] if cls.__name__ == "RNN" else []
        return [*_RNN_ARGS, *extra]
    params = inspect.signature(cls).parameters.values()
    return [
        p.name
        for p in params
        if p.name not in _SKIP_ARGS and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def _standard_config(m: Any) -> dict[str, Any]:
    torch = _torch()
    cls = type(m)
    config: dict[str, Any] = {}
    for arg in _init_args(cls):
        if cls.__name__ == "MultiheadAttention" and arg in ("bias", "add_bias_kv"):
            # kept as tensors (or None), not under the argument's name
            config[arg] = (m.in_proj_bias if arg == "bias" else m.bias_k) is not None
            continue
        if cls.__name__ == "PReLU" and arg == "init":
            continue  # the weight carries it
        if not hasattr(m, arg):
            raise SerializationError(
                f"cannot read the constructor argument {arg!r} of {_name(cls)}: save its "
                "state_dict, or register a factory (safepoint.adapters.torch.register_module)"
            )
        v = getattr(m, arg)
        if isinstance(v, torch.Tensor) or (v is None and arg == "bias"):
            v = v is not None  # `bias=True` becomes a Parameter (or None)
        config[arg] = v
    return config


def register_module(
    cls: type,
    *,
    config: Callable[[Any], dict[str, Any]] | None = None,
    factory: Callable[..., Any] | None = None,
) -> type:
    """Allow a module class to be saved and loaded: ``factory(**config(module))`` rebuilds it.

    By default ``config`` reads the attributes named like ``cls.__init__``'s arguments and
    ``factory`` is ``cls`` itself. Registration is code the *loading* program runs: a file can
    name a class, never add one; registered classes are trusted by exact name. Usable as a
    decorator::

        @register_module
        class TwoLayer(torch.nn.Module):
            def __init__(self, n_in: int, hidden: int = 16):
                super().__init__()
                self.n_in, self.hidden = n_in, hidden
                self.body = torch.nn.Sequential(torch.nn.Linear(n_in, hidden), torch.nn.ReLU())
    """
    name = _name(cls)
    _FACTORIES[name] = (factory or cls, config)
    trust_adapter_type([name])
    handler = _fmt_registry.handler_for_tag("torch.module")
    if handler is not None:
        _fmt_registry.register("torch.module", types=[name])(handler)
    return cls


def _config_of(m: Any, name: str) -> dict[str, Any]:
    if name in _FACTORIES:
        getter = _FACTORIES[name][1]
        if getter is not None:
            return dict(getter(m))
        cfg = {}
        for arg in _init_args(type(m)):
            if not hasattr(m, arg):
                raise SerializationError(
                    f"{name} has no attribute {arg!r} for its constructor argument: keep it "
                    "on the module, or pass config= to register_module"
                )
            cfg[arg] = getattr(m, arg)
        return cfg
    return _standard_config(m)


def _check_rebuild(m: Any, cls: type, config: dict[str, Any]) -> None:
    """A standard layer rebuilt from its config must describe itself identically."""
    torch = _torch()
    try:
        with torch.device("meta"):
            again = cls(**config)
    except Exception as exc:
        raise SerializationError(f"{_name(cls)} cannot be rebuilt from {config}: {exc}") from None
    if again.extra_repr() != m.extra_repr():
        raise SerializationError(
            f"{_name(cls)} rebuilt from its arguments differs ({again.extra_repr()!r} vs "
            f"{m.extra_repr()!r}): save its state_dict instead"
        )


def _encode_module(m: Any, enc: Encoder, path: str) -> dict[str, Any]:
    cls = type(m)
    name = _name(cls)
    node: dict[str, Any] = {"@": "torch.module", "t": type_ref(enc, cls)}
    if not m.training:
        node["ev"] = True
    if name in CONTAINERS:
        node["ch"] = [[k, _encode_module(c, enc, f"{path}.{k}")] for k, c in m.named_children()]
        return node
    if name not in STANDARD_LAYERS and name not in _FACTORIES:
        raise enc.fail(
            f"{name} is not a standard torch.nn layer: register a factory for it "
            "(safepoint.adapters.torch.register_module) in the saving and the loading program, "
            "or save model.state_dict() and rebuild the module in code"
        )
    config = _config_of(m, name)
    if name in STANDARD_LAYERS:
        _check_rebuild(m, cls, config)
    node["c"] = enc.encode_child(config, f"{path}.<config>")
    return node


def _decode_module(node: Any, dec: Decoder, depth: int = 0) -> Any:
    torch = _torch()
    if not isinstance(node, dict) or node.get("@") != "torch.module":
        raise dec.fail("a torch module node was expected")
    if depth > 64:
        raise dec.fail("torch modules nest too deeply")
    allowed = (*STANDARD_LAYERS, *CONTAINERS, *_FACTORIES)
    cls = adapter_class(node, dec, allowed)
    name = _name(cls)
    if name in CONTAINERS:
        children = []
        for pair in dec.items(node, "ch"):
            if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
                raise dec.fail("a torch container child must be [name, module]")
            children.append((pair[0], _decode_module(pair[1], dec, depth + 1)))
        if cls.__name__ == "ModuleDict":
            m = cls(dict(children))
        else:
            m = cls(*(c for _, c in children))
            if [k for k, _ in children] != [str(i) for i in range(len(children))]:
                raise dec.fail("a Sequential/ModuleList must have children named 0..n-1")
    else:
        config = dec.decode(node.get("c"))
        if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
            raise dec.fail("a torch module config must be a dict with str keys")
        factory = _FACTORIES[name][0] if name in _FACTORIES else cls
        # built without memory: the tensors come from the file (load_state_dict assign=True)
        with torch.device("meta"):
            m = factory(**config)
        if type(m) is not cls:
            raise dec.fail(f"the factory of {name} built a {type(m).__name__}")
    m.train(not node.get("ev", False))
    return m


class ModuleHandler:
    """``torch.nn.Module``: class + config tree, and the state_dict as tensors at the root."""

    @staticmethod
    def encode(obj: Any, enc: Encoder) -> dict[str, Any]:
        node = _encode_module(obj, enc, "")
        sd = obj.state_dict(keep_vars=False)
        node["sd"] = enc.encode_child(dict(sd), ".state_dict()")
        return node

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        torch = _torch()
        m = _decode_module(node, dec)
        sd = dec.decode(node.get("sd"))
        if not isinstance(sd, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()
        ):
            raise dec.fail("a torch module's state_dict must map names to tensors")
        try:
            m.load_state_dict(sd, strict=True, assign=True)
        except RuntimeError as exc:
            raise FormatError(
                f"the stored tensors do not fit the module: {str(exc).splitlines()[0]}"
            ) from None
        for pname, t in [*m.named_parameters(), *m.named_buffers()]:
            if t.device.type == "meta":
                raise FormatError(f"the file holds no data for {pname}")
        return m


class UnregisteredModuleHandler:
    """Any other ``torch.nn.Module`` subclass: explain what to do (never pickled)."""

    @staticmethod
    def encode(obj: Any, enc: Encoder) -> dict[str, Any]:
        return ModuleHandler.encode(obj, enc)  # raises naming register_module

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:  # pragma: no cover - never written
        raise dec.fail("unexpected torch.module.other node")


HANDLERS = {
    "torch.tensor": TensorHandler,
    "torch.module": ModuleHandler,
    "torch.module.other": UnregisteredModuleHandler,
}


# -- safetensors --------------------------------------------------------------------------
def _flat_state(obj: Any) -> dict[str, Any]:
    torch = _torch()
    sd = obj.state_dict() if isinstance(obj, torch.nn.Module) else obj
    if not isinstance(sd, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()
    ):
        raise SerializationError("expected a torch module or a mapping of str -> tensor")
    out: dict[str, Any] = {}
    seen: dict[tuple[int, int], str] = {}
    for k, v in sd.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset())
        # safetensors refuses tensors that share memory (tied weights): store copies
        out[k] = v.detach().clone().contiguous() if key in seen else v.detach().contiguous()
        seen[key] = k
    return out


def save_safetensors(
    obj: Any, path: str | os.PathLike[str], metadata: dict[str, str] | None = None
) -> None:
    """Write a module's ``state_dict`` (or a dict of tensors) as a ``.safetensors`` file."""
    st = import_framework("safetensors.torch", "torch", "pip install safetensors")
    st.save_file(_flat_state(obj), os.fspath(path), metadata=metadata)


def load_safetensors(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``.safetensors`` file into a dict of CPU tensors (no pickle involved)."""
    st = import_framework("safetensors.torch", "torch", "pip install safetensors")
    out: dict[str, Any] = st.load_file(os.fspath(path))
    return out


def to_safetensors(source: Any, path: str | os.PathLike[str] | None = None) -> bytes | None:
    """Turn a safepoint file holding a ``state_dict`` (or a module) into safetensors bytes.

    Works from the stored buffers and node headers alone: torch is not imported, nothing is
    constructed. Returns the bytes, or writes them to ``path`` and returns None.

    Example:
        >>> sp.dump(net.state_dict(), "w.sp")                            # doctest: +SKIP
        >>> sp.adapters.torch.to_safetensors("w.sp", "w.safetensors")   # doctest: +SKIP
    """
    from ..format.reader import open_reader

    reader = open_reader(source)
    try:
        root = reader.manifest.get("root")
        if isinstance(root, dict) and root.get("@") == "torch.module":
            root = root.get("sd")
        if isinstance(root, dict) and root.get("@") == "odict":
            root = root.get("d")
        body = root.get("s") if isinstance(root, dict) and root.get("@") == "dict" else None
        if not isinstance(body, dict):
            raise FormatError("the file does not hold a state_dict (a dict of named tensors)")
        header: dict[str, Any] = {}
        chunks: list[bytes] = []
        offset = 0
        for name, node in body.items():
            if not (isinstance(node, dict) and node.get("@") == "torch.tensor"):
                raise FormatError(f"entry {name!r} is not a tensor")
            code, shape, idx = node.get("dt"), node.get("sh"), node.get("b")
            if code not in DTYPES or not isinstance(shape, list) or not isinstance(idx, int):
                raise FormatError(f"entry {name!r} is not a valid tensor node")
            data = reader.read_bytes(idx)
            if math.prod(shape) * DTYPES[code][1] != len(data):
                raise FormatError(f"entry {name!r}: {len(data)} bytes do not fit {shape}")
            header[name] = {
                "dtype": code,
                "shape": shape,
                "data_offsets": [offset, offset + len(data)],
            }
            chunks.append(data)
            offset += len(data)
        head = json.dumps(header, separators=(",", ":")).encode()
        head += b" " * (-len(head) % 8)
        out = struct.pack("<Q", len(head)) + head + b"".join(chunks)
    finally:
        reader.close()
    if path is None:
        return out
    with open(os.fspath(path), "wb") as f:
        f.write(out)
    return None
