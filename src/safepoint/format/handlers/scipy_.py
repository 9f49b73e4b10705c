"""scipy.sparse matrices and arrays (csr, csc, coo, bsr, dia, lil, dok).

csr/csc/bsr keep their index arrays; coo keeps its coordinates; the other
formats are stored as csr and converted back. Index arrays are validated
before scipy sees them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..registry import register

if TYPE_CHECKING:
    from ..decoder import Decoder
    from ..encoder import Encoder

_FORMATS = ("csr", "csc", "coo", "bsr", "dia", "lil", "dok")
_NAMES = [f"scipy.sparse._{fmt}.{fmt}_{kind}" for fmt in _FORMATS for kind in ("matrix", "array")]


@register("sparse", _NAMES)
class SparseHandler:
    @staticmethod
    def encode(obj: Any, enc: Encoder) -> dict[str, Any]:
        import scipy.sparse as sps

        fmt = obj.format
        is_array = isinstance(obj, sps.sparray)
        node: dict[str, Any] = {"f": fmt, "a": is_array, "sh": list(obj.shape)}
        if fmt in ("dia", "lil", "dok"):
            obj = obj.tocsr()
            node["via"] = "csr"
        stored = obj.format
        if stored == "coo":
            node["d"] = enc.encode_child(obj.data, ".data")
            node["c"] = [enc.encode_child(c, ".coords") for c in obj.coords]
        else:
            node["d"] = enc.encode_child(obj.data, ".data")
            node["i"] = enc.encode_child(obj.indices, ".indices")
            node["p"] = enc.encode_child(obj.indptr, ".indptr")
        return node

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        import scipy.sparse as sps

        fmt = dec.field(node, "f", str)
        if fmt not in _FORMATS:
            raise dec.fail(f"unknown sparse format {fmt!r}")
        stored = node.get("via", fmt)
        if stored not in ("csr", "csc", "coo", "bsr"):
            raise dec.fail(f"unknown stored sparse format {stored!r}")
        shape = dec.field(node, "sh", list)
        if len(shape) != 2 or not all(isinstance(s, int) and 0 <= s < 2**62 for s in shape):
            raise dec.fail("sparse shape must be two non-negative integers")
        data = dec.decode(node.get("d"))
        if not isinstance(data, np.ndarray) or data.dtype.kind not in "biufc":
            raise dec.fail("sparse data must be a numeric array")
        is_array = bool(node.get("a"))
        if stored == "coo":
            coords = [dec.decode_structural(c) for c in dec.items(node, "c")]
            if len(coords) != 2:
                raise dec.fail("coo needs two coordinate arrays")
            for c, n in zip(coords, shape, strict=True):
                if (
                    not isinstance(c, np.ndarray)
                    or c.dtype.kind not in "iu"
                    or c.shape != data.shape
                ):
                    raise dec.fail("coo coordinates must be integer arrays like data")
                if c.size and (c.min() < 0 or c.max() >= n):
                    raise dec.fail("coo coordinates out of range (crafted file?)")
            cls = sps.coo_array if is_array else sps.coo_matrix
            out = cls((data, (coords[0], coords[1])), shape=tuple(shape))
            if any(c.dtype != o.dtype for c, o in zip(coords, out.coords, strict=True)):
                # scipy narrows int64 indices to int32 when they fit: keep what was saved
                out.coords = (coords[0], coords[1])
        else:
            indices = dec.decode_structural(node.get("i"))
            indptr = dec.decode_structural(node.get("p"))
            _check_compressed(stored, data, indices, indptr, shape, dec)
            cls = getattr(sps, f"{stored}_{'array' if is_array else 'matrix'}")
            out = cls((data, indices, indptr), shape=tuple(shape))
            if out.indices.dtype != indices.dtype or out.indptr.dtype != indptr.dtype:
                # scipy narrows int64 indices to int32 when they fit: keep what was saved
                # (already checked above, so assigning them is safe)
                out.indices, out.indptr = indices, indptr
        if fmt != stored:
            out = out.asformat(fmt)
        return out


def _check_compressed(
    fmt: str, data: Any, indices: Any, indptr: Any, shape: list[int], dec: Decoder
) -> None:
    for name, arr in (("indices", indices), ("indptr", indptr)):
        if not isinstance(arr, np.ndarray) or arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise dec.fail(f"sparse {name} must be a 1-D integer array")
    if fmt == "bsr":
        if data.ndim != 3:
            raise dec.fail("bsr data must be 3-D")
        r, c = data.shape[1:]
        if r == 0 or c == 0 or shape[0] % r or shape[1] % c:
            raise dec.fail("bsr block shape does not divide the matrix shape")
        major, minor, nnz = shape[0] // r, shape[1] // c, data.shape[0]
    else:
        if data.ndim != 1:
            raise dec.fail("sparse data must be 1-D")
        major, minor = (shape[0], shape[1]) if fmt == "csr" else (shape[1], shape[0])
        nnz = data.shape[0]
    if indptr.shape != (major + 1,) or indices.shape != (nnz,):
        raise dec.fail("sparse index arrays do not match the shape")
    if indptr[0] != 0 or indptr[-1] != nnz or np.any(np.diff(indptr) < 0):
        raise dec.fail("sparse indptr is not a valid non-decreasing row pointer (crafted file?)")
    if nnz and (indices.min() < 0 or indices.max() >= minor):
        raise dec.fail("sparse indices out of range (crafted file?)")


@register("bspline", ["scipy.interpolate._bsplines.BSpline"])
class BSplineHandler:
    """scipy.interpolate.BSpline (SplineTransformer's ``bsplines_``): knots,
    coefficients, degree. Rebuilt through BSpline's validating constructor, so
    that knots and coefficients agree before compiled code evaluates them."""

    @staticmethod
    def encode(obj: Any, enc: Encoder) -> dict[str, Any]:
        extrapolate = obj.extrapolate
        if not (isinstance(extrapolate, bool) or extrapolate == "periodic"):
            raise enc.fail(f"BSpline.extrapolate={extrapolate!r} is not supported")
        return {
            "t": enc.encode_child(np.asarray(obj.t), ".t"),
            "c": enc.encode_child(np.asarray(obj.c), ".c"),
            "k": int(obj.k),
            "x": extrapolate,
            "ax": int(obj.axis),
        }

    @staticmethod
    def decode(node: dict[str, Any], dec: Decoder) -> Any:
        from scipy.interpolate import BSpline

        t = dec.decode(node.get("t"))
        c = dec.decode(node.get("c"))
        k = dec.field(node, "k", int)
        axis = dec.field(node, "ax", int)
        extrapolate = node.get("x")
        if not (isinstance(extrapolate, bool) or extrapolate == "periodic"):
            raise dec.fail("invalid BSpline extrapolate")
        if not (isinstance(t, np.ndarray) and t.ndim == 1 and t.dtype.kind == "f"):
            raise dec.fail("BSpline knots must be a 1-D float array")
        if not (isinstance(c, np.ndarray) and c.ndim >= 1 and c.dtype.kind in "fc"):
            raise dec.fail("BSpline coefficients must be a float array")
        if not (0 <= k <= 64 and 0 <= axis < c.ndim):
            raise dec.fail("BSpline degree or axis out of range")
        try:
            # the stored coefficients have the interpolation axis first
            return BSpline(t, np.moveaxis(c, 0, axis), k, extrapolate=extrapolate, axis=axis)
        except (TypeError, ValueError) as exc:
            raise dec.fail(f"invalid B-spline: {exc}") from None
