"""H2O-3: models stored as MOJOs (the default) and, when asked, as binary models too.

* An H2O model object (``H2OGradientBoostingEstimator``, ...) is saved from the running
  cluster as its **MOJO** (``download_mojo``: a zip of the model's scoring data, no code) with
  the H2O version. Loading uploads the MOJO into the connected cluster
  (``h2o.upload_mojo``), which returns an ``H2OGenericEstimator`` that predicts like the
  original; MOJOs load on any later H2O version.
* The **binary** model (``h2o.save_model``) is stored only when asked:
  ``sp.dump(with_binary(model), path)``. H2O reads binary models with Java deserialization
  (an unfiltered ``ObjectInputStream``), which can run code from the file, so it is loaded
  only when the caller trusts it by name: ``sp.load(path, trusted=["h2o:binary"])`` (CLI
  ``--trust h2o:binary``); it then needs the exact H2O version that wrote it, checked first.
  Without the token the MOJO is loaded; a file with no MOJO is refused.
* :class:`H2OMojo` holds a MOJO zip and scores pandas DataFrames with ``h2o.mojo_predict_pandas``
  and the genmodel classes in the ``h2o`` package's own jar: a Java process, no cluster.
  :func:`mojo_from` extracts the MOJO of a stored model from the file's buffers without
  a cluster or an H2O version match.

Example:
    >>> store.put("churn/h2o", gbm)                                     # doctest: +SKIP
    >>> store.get("churn/h2o").predict(h2o_frame)                      # doctest: +SKIP
    >>> store.put("churn/h2o-bin", sp.adapters.h2o.with_binary(gbm))   # doctest: +SKIP
    >>> store.get("churn/h2o-bin", trusted=["h2o:binary"])              # doctest: +SKIP
    >>> sp.adapters.h2o.mojo_from(path).predict(pandas_frame)          # doctest: +SKIP
"""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING, Any

from ..errors import AdapterError, FormatError, SerializationError, UntrustedTypesError
from ._common import adapter_class, import_framework, trusts, type_ref

if TYPE_CHECKING:
    from ..format.decoder import Decoder
    from ..format.encoder import Encoder

__all__ = [
    "BINARY",
    "HANDLERS",
    "MODEL_TYPES",
    "H2OMojo",
    "WithBinary",
    "check_version",
    "mojo_from",
    "with_binary",
]

_EST = "h2o.estimators."
MODEL_TYPES = tuple(
    _EST + n
    for n in (
        "gbm.H2OGradientBoostingEstimator",
        "random_forest.H2ORandomForestEstimator",
        "glm.H2OGeneralizedLinearEstimator",
        "deeplearning.H2ODeepLearningEstimator",
        "xgboost.H2OXGBoostEstimator",
        "kmeans.H2OKMeansEstimator",
        "isolation_forest.H2OIsolationForestEstimator",
    )
)
_MOJO_TYPE = ("safepoint.adapters.h2o.H2OMojo",)
#: the trust token that lets a load read a stored binary model
BINARY = "h2o:binary"


def _h2o() -> Any:
    return import_framework("h2o", "h2o")


def installed_version() -> str | None:
    try:
        from importlib import metadata

        return metadata.version("h2o")
    except Exception:
        return None


def check_version(recorded: Any) -> None:
    """Raise :class:`AdapterError` unless the installed h2o is exactly ``recorded``."""
    here = installed_version()
    if here != recorded:
        raise AdapterError(
            f"this H2O binary model was saved with H2O {recorded}, and H2O loads binary models "
            f"only on the same version (installed here: {here or 'none'}): install "
            f"h2o=={recorded}, or score its MOJO without a cluster "
            "(safepoint.adapters.h2o.mojo_from(file_or_bytes).predict(frame))"
        )


def _cluster_up() -> bool:
    h2o = _h2o()
    try:
        conn = h2o.connection()
        return bool(conn is not None and conn.connected)
    except Exception:
        return False


class H2OMojo:
    """A MOJO (a zip of the model's scoring data, no code) scored without an H2O cluster.

    ``predict`` runs H2O's genmodel scorer in a Java process on a pandas DataFrame (Java 8+
    must be on PATH; the scorer comes from the installed ``h2o`` package).
    """

    def __init__(self, data: bytes, h2o_version: str | None = None, algo: str | None = None):
        if not isinstance(data, bytes | bytearray) or not bytes(data[:2]) == b"PK":
            raise FormatError("a MOJO must be the bytes of a zip file")
        self.data = bytes(data)
        self.h2o_version = h2o_version
        self.algo = algo

    def __repr__(self) -> str:
        return f"H2OMojo(algo={self.algo!r}, h2o={self.h2o_version!r}, {len(self.data)} bytes)"

    @classmethod
    def from_model(cls, model: Any) -> H2OMojo:
        """The MOJO of a model in the running cluster."""
        h2o = _h2o()
        with tempfile.TemporaryDirectory(prefix="safepoint-h2o-") as tmp:
            path = model.download_mojo(path=tmp)
            with open(path, "rb") as f:
                return cls(f.read(), h2o.__version__, getattr(model, "algo", None))

    def predict(self, frame: Any, **kwargs: Any) -> Any:
        """Score a pandas DataFrame; returns a DataFrame (``predict`` + class probabilities)."""
        h2o = _h2o()
        jar = os.path.join(os.path.dirname(h2o.__file__), "backend", "bin", "h2o.jar")
        if not os.path.exists(jar):
            raise AdapterError(f"the h2o package has no {jar}: reinstall h2o")
        with tempfile.TemporaryDirectory(prefix="safepoint-mojo-") as tmp:
            path = os.path.join(tmp, "model.zip")
            with open(path, "wb") as f:
                f.write(self.data)
            return h2o.mojo_predict_pandas(frame, path, genmodel_jar_path=jar, **kwargs)


class WithBinary:
    """An H2O model to be stored with its binary model as well as its MOJO
    (see :func:`with_binary`). Saving only: loading gives back the H2O model."""

    def __init__(self, model: Any) -> None:
        name = f"{type(model).__module__}.{type(model).__qualname__}"
        if name not in MODEL_TYPES:
            kinds = ", ".join(n.rsplit(".", 1)[1] for n in MODEL_TYPES)
            raise SerializationError(f"with_binary() takes an H2O model ({kinds}), not {name}")
        self.model = model


def with_binary(model: Any) -> WithBinary:
    """Ask to store ``model``'s binary model next to its MOJO.

    The binary model keeps everything H2O has (training metrics, cross-validation models,
    the original estimator class) but H2O reads it with Java deserialization, which can run
    code from the file: a load reads it only with ``trusted=["h2o:binary"]``, and only on
    the H2O version that wrote it. Needed for an algorithm without MOJO support.

    Example:
        >>> sp.dump(with_binary(gbm), "gbm.sp")                         # doctest: +SKIP
        >>> sp.load("gbm.sp")                     # the MOJO: a generic model  # doctest: +SKIP
        >>> sp.load("gbm.sp", trusted=["h2o:binary"])   # the binary model     # doctest: +SKIP
    """
    return WithBinary(model)


def _require_cluster(what: str) -> Any:
    h2o = _h2o()
    if not _cluster_up():
        raise AdapterError(
            f"loading {what} needs a running H2O cluster: call h2o.init() first, or score "
            "the MOJO without one (safepoint.adapters.h2o.mojo_from(path).predict(frame))"
        )
    return h2o


class ModelHandler:
    """An H2O model in the cluster <-> MOJO (+ binary model when asked) + H2O version."""

    @staticmethod
    def encode(obj: Any, enc: Encoder) -> dict[str, Any]:
        h2o = _h2o()
        binary = isinstance(obj, WithBinary)
        model = obj.model if binary else obj
        algo = str(getattr(model, "algo", ""))
        node: dict[str, Any] = {"t": type_ref(enc, model), "h2o": h2o.__version__, "algo": algo}
        if getattr(model, "have_mojo", False):
            node["mojo"] = enc.encode_child(H2OMojo.from_model(model), ".<mojo>")
        elif not binary:
            raise SerializationError(
                f"this H2O model ({algo or type(model).__name__}) has no MOJO, the format "
                "safepoint loads by default: store its binary model instead with "
                "sp.dump(safepoint.adapters.h2o.with_binary(model), path); loading it will "
                "need trusted=['h2o:binary'] (H2O reads binary models with Java "
                "deserialization)"
            )
        if binary:
            with tempfile.TemporaryDirectory(prefix="safepoint-h2o-") as tmp:
                path = h2o.save_model(model, path=tmp, filename="model", force=True)
                with open(path, "rb") as f:
                    node["bin"] = enc.buffer(f.read())
        return node

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        adapter_class(node, dec, MODEL_TYPES)
        if "bin" in node and trusts(dec, BINARY):
            return _load_binary(node, dec)
        if "mojo" not in node:
            raise UntrustedTypesError(
                [BINARY],
                "this H2O model is stored only as a binary model, which H2O reads with Java "
                "deserialization (it can run code from the file): nothing was loaded. If you "
                "trust the file, load it with trusted=['h2o:binary'] (CLI: --trust "
                "h2o:binary)",
            )
        mojo = dec.decode(node["mojo"])
        if not isinstance(mojo, H2OMojo):
            raise dec.fail("an H2O model's mojo is not an H2O MOJO node")
        h2o = _require_cluster("an H2O model")
        with tempfile.TemporaryDirectory(prefix="safepoint-h2o-") as tmp:
            path = os.path.join(tmp, "model.zip")
            with open(path, "wb") as f:
                f.write(mojo.data)
            try:
                return h2o.upload_mojo(path)
            except Exception as exc:
                raise FormatError(f"H2O could not load the stored MOJO: {exc}") from None


def _load_binary(node: dict[str, Any], dec: Decoder) -> Any:
    """The binary model, for a caller who trusts it (``trusted=["h2o:binary"]``)."""
    check_version(node.get("h2o"))  # before reading or uploading anything
    h2o = _require_cluster("an H2O binary model")
    raw = dec.raw(dec.field(node, "bin", int))
    if "mojo" in node:
        dec.decode(node["mojo"])  # checked like the rest; the model itself is the binary
    with tempfile.TemporaryDirectory(prefix="safepoint-h2o-") as tmp:
        path = os.path.join(tmp, "model")
        with open(path, "wb") as f:
            f.write(raw)
        try:
            return h2o.upload_model(path)
        except Exception as exc:
            raise FormatError(f"H2O could not load the stored binary model: {exc}") from None


class MojoHandler:
    """:class:`H2OMojo` <-> the zip bytes."""

    @staticmethod
    def encode(obj: Any, enc: Encoder) -> dict[str, Any]:
        return {
            "t": type_ref(enc, obj),
            "b": enc.buffer(obj.data),
            "h2o": obj.h2o_version,
            "algo": obj.algo,
        }

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        adapter_class(node, dec, _MOJO_TYPE)
        v, algo = node.get("h2o"), node.get("algo")
        return H2OMojo(
            dec.raw(dec.field(node, "b", int)),
            v if isinstance(v, str) else None,
            algo if isinstance(algo, str) else None,
        )


def mojo_from(source: Any) -> H2OMojo:
    """The MOJO inside a safepoint file holding an H2O model (or an :class:`H2OMojo`),
    read from the file's buffers: no cluster, no H2O version match needed."""
    from ..format.reader import open_reader

    reader = open_reader(source)
    try:
        node = reader.manifest.get("root")
        if isinstance(node, dict) and node.get("@") == "h2o.model":
            node = node.get("mojo")
            if node is None:
                raise AdapterError(
                    "this H2O model was stored without a MOJO (its algorithm has none)"
                )
        if not (isinstance(node, dict) and node.get("@") == "h2o.mojo"):
            raise FormatError("the file holds no H2O MOJO")
        idx = node.get("b")
        if not isinstance(idx, int) or isinstance(idx, bool):
            raise FormatError("malformed H2O MOJO node")
        v, algo = node.get("h2o"), node.get("algo")
        return H2OMojo(
            reader.read_bytes(idx),
            v if isinstance(v, str) else None,
            algo if isinstance(algo, str) else None,
        )
    finally:
        reader.close()


HANDLERS = {"h2o.model": ModelHandler, "h2o.mojo": MojoHandler}
