"""Helpers shared by the adapters (no framework is imported here)."""

from __future__ import annotations

import importlib
import keyword
from typing import TYPE_CHECKING, Any

from ..errors import AdapterError, FormatError
from .registry import ADAPTER_KIND, trust_tokens

if TYPE_CHECKING:
    from types import ModuleType

    from ..format.decoder import Decoder
    from ..format.encoder import Encoder

__all__ = [
    "AdapterError",
    "adapter_class",
    "framework",
    "import_framework",
    "set_fitted_attributes",
    "trusts",
    "type_ref",
]


def import_framework(module: str, extra: str, pip: str | None = None) -> ModuleType:
    """Import an optional framework, or explain how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        how = pip or f"pip install 'safepoint[{extra}]'"
        raise AdapterError(
            f"this needs the optional framework {module!r}, which cannot be imported here "
            f"({exc}): install it ({how})"
        ) from None


framework = import_framework


def type_ref(enc: Encoder, obj_or_cls: Any) -> int:
    """Name a framework class in the manifest's types table (kind ``adapter``)."""
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    return enc.type_ref(cls.__module__, cls.__qualname__, ADAPTER_KIND)


def adapter_class(node: dict[str, Any], dec: Decoder, expected: tuple[str, ...]) -> type:
    """The audited class a node names; it must be one of ``expected`` exactly."""
    cls = dec.type_of(node)
    name = f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', '?')}"
    if not isinstance(cls, type) or name not in expected:
        raise dec.fail(f"an adapter node names {name}, expected one of {', '.join(expected)}")
    return cls


def trusts(dec: Decoder, token: str) -> bool:
    """Whether the caller of this load passed the trust token ``token`` in ``trusted=``."""
    if token not in trust_tokens():
        raise RuntimeError(f"{token!r} is not a declared trust token")  # a programming error
    policy = getattr(dec, "policy", None)  # the caller's trusted= names are policy.extra
    return token in getattr(policy, "extra", frozenset())


def set_fitted_attributes(obj: Any, attrs: Any, dec: Decoder, what: str) -> None:
    """Set decoded fitted attributes (plain data, already audited) on a rebuilt estimator."""
    if not isinstance(attrs, dict):
        raise dec.fail(f"the fitted attributes of {what} must be a dict")
    for k, v in attrs.items():
        if (
            not isinstance(k, str)
            or not k.isidentifier()
            or keyword.iskeyword(k)
            or k.startswith("__")
        ):
            raise dec.fail(f"{what} has a fitted attribute named {k!r}: refused")
        setattr(obj, k, v)


def fail_format(msg: str) -> FormatError:
    return FormatError(f"malformed adapter node: {msg}")
