"""The adapter registry: which framework types safepoint stores in their own native format.

An adapter declares, by *name*, the framework classes it handles (``"xgboost.core.Booster"``),
the node tags it writes, and the module holding its code. Declaring costs nothing: the
framework is imported only when an object of one of those types is saved, or when a file
holding one of its nodes is loaded *after* the audit approved it. The core never imports an
optional framework at import time.

Each declared type name is also the exact type the trust policy accepts by default in the
manifest's types table (kind ``"adapter"``); a subclass, or any other class of the same
framework, is not trusted unless the caller names it::

    from safepoint.adapters.registry import Adapter, register_adapter

    register_adapter(Adapter(
        name="mylib",
        module="mypkg.safepoint_mylib",          # defines HANDLERS = {"mylib.model": Handler}
        types={"mylib.model": ["mylib.core.Model"]},
        distribution="mylib",
        stores="the model's own JSON format",
    ))

The handler classes follow :class:`safepoint.format.registry.Handler`; an adapter node names its
framework class with ``enc.type_ref(module, qualname, "adapter")`` so that the audit sees it,
and rebuilds objects only through the framework's own loader of non-executable bytes.

A framework format that *can* run code when its own loader reads it (H2O's binary models,
read by Java deserialization) is never read by default. The adapter declares a **trust
token** for it (``tokens={"h2o:binary": "..."}``); the handler reads that format only when the
caller passes the token in ``trusted=`` (``sp.load(path, trusted=["h2o:binary"])``, CLI
``--trust h2o:binary``), which it checks with :func:`safepoint.adapters._common.trusts`.
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..format.guard import Allowance, in_temp_dir, to_loopback
from ..format.registry import register, register_fallback, register_trust_rule
from ._torch_names import CONTAINERS, STANDARD_LAYERS, TENSOR_TYPES

if TYPE_CHECKING:
    from ..format.decoder import Decoder
    from ..format.encoder import Encoder

__all__ = [
    "ADAPTER_KIND",
    "Adapter",
    "adapter",
    "adapters",
    "is_trusted_adapter_type",
    "register_adapter",
    "trust_adapter_type",
    "trust_tokens",
]

#: the ``kind`` column of the manifest's types table for framework classes built by adapters
ADAPTER_KIND = "adapter"


@dataclass(frozen=True)
class Adapter:
    """One optional framework: the classes it handles and where its code lives."""

    #: short name ("xgboost"), also the pip extra: ``pip install safepoint[xgboost]``
    name: str
    #: module defining ``HANDLERS: dict[tag, handler]`` (imported on first use)
    module: str
    #: node tag -> exact ``module.qualname`` names of the classes encoded with that tag
    types: dict[str, list[str]]
    #: the framework's distribution name on PyPI (for messages)
    distribution: str
    #: what the adapter stores, for docs and ``safepoint adapters``-style listings
    stores: str = ""
    #: names trusted in the types table beyond ``types`` (classes an adapter node names
    #: without encoding them itself, e.g. torch layers inside a Sequential)
    trusted: list[str] = field(default_factory=list)
    #: node tag -> classes encoded with that tag but never named in a file (wrappers that
    #: ask for an option at save time, e.g. ``h2o.with_binary(model)``): not trusted
    save_types: dict[str, list[str]] = field(default_factory=dict)
    #: trust tokens: ``trusted=`` names that let this adapter read a format whose own
    #: loader can run code (token -> what it allows, for messages and docs)
    tokens: dict[str, str] = field(default_factory=dict)
    #: audit events the framework's own loader needs during a load, beyond what the
    #: load-time guard allows (safepoint.format.guard): XGBoost and LightGBM call their
    #: libraries through ctypes; Spark starts a JVM and talks to it over a socket
    guard_allow: tuple[Allowance, ...] = ()

    def type_names(self) -> list[str]:
        return sorted({n for names in self.types.values() for n in names} | set(self.trusted))


class _LazyHandler:
    """Stands in the format registry for an adapter's handler until first use."""

    def __init__(self, adapter: Adapter, tag: str) -> None:
        self.adapter = adapter
        self.tag = tag
        self._real: Any = None

    def _load(self) -> Any:
        if self._real is None:
            mod = importlib.import_module(self.adapter.module)
            handlers = getattr(mod, "HANDLERS", {})
            if self.tag not in handlers:
                raise RuntimeError(
                    f"adapter module {self.adapter.module} does not define a handler for "
                    f"{self.tag!r}"
                )
            self._real = handlers[self.tag]
        return self._real

    def encode(self, obj: Any, enc: Encoder) -> dict[str, Any]:
        node: dict[str, Any] = self._load().encode(obj, enc)
        return node

    def decode(self, node: dict[str, Any], dec: Decoder) -> Any:
        handler = self._load()
        with guard_for(self.adapter):
            return handler.decode(node, dec)


def guard_for(a: Adapter) -> Any:
    """The load-time guard while ``a``'s framework loader runs: the enclosing load's, plus
    the events the adapter declares (``Adapter.guard_allow``) and its framework's package."""
    from ..format.guard import guarded

    top = a.distribution.replace("-", "_").partition("[")[0]
    package = {"pyspark": "pyspark", "scikit_learn": "sklearn"}.get(top, top)
    return guarded(f"the {a.name} adapter", libraries=[package], allow=a.guard_allow)


_lock = threading.Lock()
_adapters: dict[str, Adapter] = {}
_trusted: set[str] = set()


def register_adapter(a: Adapter) -> Adapter:
    """Declare an adapter: its tags go into the format's type-handler registry at once
    (by type name, so nothing is imported), its code loads on first use."""
    with _lock:
        if a.name in _adapters:
            if _adapters[a.name] == a:
                return a
            raise ValueError(f"adapter {a.name!r} is already registered")
        clash = set(a.tokens) & {t for other in _adapters.values() for t in other.tokens}
        if clash:
            raise ValueError(f"trust token {sorted(clash)[0]!r} is already declared")
        if any(":" not in t or t.count(":") != 1 for t in a.tokens):
            raise ValueError("a trust token looks like 'framework:what'")
        _adapters[a.name] = a
        handlers: dict[str, _LazyHandler] = {}
        for tag, names in a.types.items():
            handlers[tag] = _LazyHandler(a, tag)
            register(tag, types=names)(handlers[tag])
        for tag, names in a.save_types.items():
            register(tag, types=names)(handlers.get(tag) or _LazyHandler(a, tag))
        _trusted.update(a.type_names())
    return a


def trust_tokens() -> dict[str, str]:
    """Every declared trust token (``"h2o:binary"``) and what trusting it allows."""
    return {t: what for a in adapters() for t, what in a.tokens.items()}


def trust_adapter_type(names: Iterable[str]) -> None:
    """Add exact class names to the adapter trust set of this process.

    Used by registrations the *loading* code makes itself (a torch module factory): the file
    can only name them, never add to them.
    """
    with _lock:
        _trusted.update(names)


def is_trusted_adapter_type(name: str) -> bool:
    """Whether ``module.qualname`` is trusted by default as an adapter-built type."""
    return name in _trusted


@register_trust_rule
def _adapter_rule(module: str, qualname: str, kind: str) -> bool:
    """The default trust set's adapter part: exactly the framework classes the adapters
    list, and only as adapter nodes."""
    return kind == ADAPTER_KIND and is_trusted_adapter_type(f"{module}.{qualname}")


def adapters() -> list[Adapter]:
    """The declared adapters, by name."""
    return [_adapters[k] for k in sorted(_adapters)]


def adapter(name: str) -> Adapter:
    """The adapter called ``name`` (``KeyError`` if none)."""
    return _adapters[name]


#: what unpacking a model into a temporary folder for its framework does (each allowed
#: only for a path in the temporary folder)
_TEMP_FILE_EVENTS = (
    "open",
    "os.mkdir",
    "os.remove",
    "os.unlink",
    "os.rmdir",
    "os.chmod",
    "os.rename",
    "shutil.",
)

# -- the built-in adapters (declarations only: no framework is imported here) -------------
register_adapter(
    Adapter(
        name="xgboost",
        module="safepoint.adapters.xgboost",
        types={
            "xgboost.booster": ["xgboost.core.Booster"],
            "xgboost.sklearn": [
                "xgboost.sklearn.XGBClassifier",
                "xgboost.sklearn.XGBRegressor",
                "xgboost.sklearn.XGBRanker",
                "xgboost.sklearn.XGBRFClassifier",
                "xgboost.sklearn.XGBRFRegressor",
            ],
        },
        distribution="xgboost",
        stores="the booster as UBJSON (Booster.save_raw('ubj')); the sklearn wrapper's params",
        guard_allow=("ctypes.",),
    )
)
register_adapter(
    Adapter(
        name="lightgbm",
        module="safepoint.adapters.lightgbm",
        types={
            "lightgbm.booster": ["lightgbm.basic.Booster"],
            "lightgbm.sklearn": [
                "lightgbm.sklearn.LGBMClassifier",
                "lightgbm.sklearn.LGBMRegressor",
                "lightgbm.sklearn.LGBMRanker",
            ],
        },
        distribution="lightgbm",
        stores="the booster's text model (Booster.model_to_string); the sklearn wrapper's params",
        guard_allow=("ctypes.",),
    )
)
_TORCH = register_adapter(
    Adapter(
        name="torch",
        module="safepoint.adapters.torch",
        types={
            "torch.tensor": list(TENSOR_TYPES),
            "torch.module": [*STANDARD_LAYERS, *CONTAINERS],
        },
        distribution="torch",
        stores="tensors as raw buffers with safetensors dtypes and shapes; modules as "
        "(class, constructor config, state_dict) for standard layers and registered factories",
    )
)


def _is_other_torch_module(t: type) -> bool:
    torch = sys.modules.get("torch")
    nn = getattr(torch, "nn", None)
    return nn is not None and isinstance(t, type) and issubclass(t, nn.Module)


# any other nn.Module: refused at save with an explanation (never pickled)
register_fallback("torch.module.other", _is_other_torch_module)(
    _LazyHandler(_TORCH, "torch.module.other")
)
register_adapter(
    Adapter(
        name="spark",
        module="safepoint.adapters.spark",
        types={"spark.ml": ["pyspark.ml.pipeline.PipelineModel"]},
        distribution="pyspark",
        stores="the directory PipelineModel.write().save() produces, one buffer per file",
        # the checked folder is written to a fresh temporary folder (mkdir, open for
        # writing; removed on failure); pyspark reads each stage's metadata through a
        # DataFrame collect, a local socket to the session's JVM whose rows come back
        # pickled by the JVM (pickle.find_class of pyspark.sql.types / pyspark.ml.linalg)
        guard_allow=(
            ("socket.", to_loopback),
            ("pickle.find_class", lambda args: str(args[0]).startswith("pyspark.")),
            *((event, in_temp_dir) for event in _TEMP_FILE_EVENTS),
        ),
    )
)
register_adapter(
    Adapter(
        name="h2o",
        module="safepoint.adapters.h2o",
        types={
            "h2o.model": [
                "h2o.estimators." + n
                for n in (
                    "gbm.H2OGradientBoostingEstimator",
                    "random_forest.H2ORandomForestEstimator",
                    "glm.H2OGeneralizedLinearEstimator",
                    "deeplearning.H2ODeepLearningEstimator",
                    "xgboost.H2OXGBoostEstimator",
                    "kmeans.H2OKMeansEstimator",
                    "isolation_forest.H2OIsolationForestEstimator",
                )
            ],
            "h2o.mojo": ["safepoint.adapters.h2o.H2OMojo"],
        },
        save_types={"h2o.model": ["safepoint.adapters.h2o.WithBinary"]},
        distribution="h2o",
        stores="the MOJO zip with the H2O version; the binary model (h2o.save_model) only "
        "when asked (with_binary)",
        tokens={
            "h2o:binary": "load H2O binary models, which H2O reads with Java "
            "deserialization (it can run code): only for files you trust"
        },
        # the MOJO (or the trusted binary) goes to a temporary file, then over HTTP to the
        # cluster the caller connected to (h2o.init / h2o.connect)
        guard_allow=(
            "socket.",
            "http.client.",
            *((event, in_temp_dir) for event in _TEMP_FILE_EVENTS),
        ),
    )
)
