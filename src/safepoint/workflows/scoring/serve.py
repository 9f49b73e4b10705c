"""Online scoring: the same model over HTTP (Starlette + uvicorn + pydantic).

Endpoints:

* ``POST /predict``: a JSON record, a list of records, or
  ``{"records": [...], "method": "predict_proba"}``; answers ``{"model", "version",
  "method", "predictions", "errors"}`` (``"prediction"`` for a single record).
  ``?method=`` chooses the model method for any form (``predict``, ``predict_proba``,
  ``predict_log_proba``, ``decision_function``; default the server's ``--method``).
  Records are validated against the model's signature: each feature must be present,
  ``null`` is a missing value (NaN, as in batch scoring) and a numeric feature must be a
  number (``true`` is refused, not read as 1). A record that fails is reported in
  ``errors`` by position; the others are still answered.
* ``GET /model``: name, version, signature, the methods the model answers, its classes.
* ``GET /openapi.json``: the API (request and response schemas, the model's features).
* ``GET /health``: the process is up. ``GET /ready``: a model is loaded (503 if not).

The model is reloaded in the background when its alias moves; requests in
flight finish on the version they started with, so none is dropped. The
server binds to 127.0.0.1; any other address needs a token, which clients send
as ``Authorization: Bearer <token>``. Requests whose ``Host`` header is not one
of the server's names are refused (DNS rebinding), unless allowed with
``allowed_hosts``. Requests and reloads are logged to the ``safepoint.serve``
logger.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd

from ..._http import HostCheck, check_bind, host_names
from ...errors import SafepointError, SchemaError
from .model import METHODS, ModelHandle

__all__ = ["check_bind", "create_app", "host_names", "openapi", "serve"]

MAX_BODY = 32 * 2**20
MAX_RECORDS = 100_000

log = logging.getLogger("safepoint.serve")


# -- request and response models ------------------------------------------------------------------
def _numeric(dtype: str) -> bool:
    return any(dtype.startswith(p) for p in ("float", "int", "uint"))


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("a numeric feature takes a number, not true/false")
    return value


@contextlib.contextmanager
def _quiet_pydantic() -> Any:
    import warnings

    with warnings.catch_warnings():
        # feature names such as "model_x" or "schema" shadow nothing: they are aliases
        warnings.simplefilter("ignore", UserWarning)
        yield


_RECORD_MODELS: dict[str, Any] = {}


def record_model(signature: dict[str, Any]) -> Any:
    """A pydantic model of one input record for ``signature`` (cached per signature).

    Every feature is required; ``null`` is a missing value; numeric features take numbers
    (or text that parses as one, as in CSV), never booleans; other fields (``id``) pass.
    """
    key = json.dumps(signature, sort_keys=True, default=str)
    cached = _RECORD_MODELS.get(key)
    if cached is not None:
        return cached
    from typing import Annotated

    from pydantic import BeforeValidator, ConfigDict, Field, create_model

    number = Annotated[float | None, BeforeValidator(_no_bool)]
    dtypes = signature.get("dtypes") or {}
    fields: dict[str, Any] = {}
    for i, name in enumerate(signature.get("feature_names") or []):
        want = str(dtypes.get(name, "float64"))
        kind: Any = number if _numeric(want) else bool | None if want == "bool" else Any
        fields[f"f{i}"] = (kind, Field(alias=str(name), title=str(name)))
    with _quiet_pydantic():
        model = create_model(
            "Record",
            __config__=ConfigDict(extra="allow", populate_by_name=False),
            **fields,
        )
    if len(_RECORD_MODELS) > 64:
        _RECORD_MODELS.clear()
    _RECORD_MODELS[key] = model
    return model


def _models() -> dict[str, Any]:
    """The fixed request/response models (built lazily: pydantic is a [serve] extra)."""
    from typing import Literal

    from pydantic import BaseModel, Field

    Method = Literal["predict", "predict_proba", "predict_log_proba", "decision_function"]

    class Envelope(BaseModel):
        """``{"records": [...], "method": ...}``: records validated one by one."""

        records: list[dict[str, Any]] = Field(max_length=MAX_RECORDS)
        method: Method | None = None

    class RecordError(BaseModel):
        index: int = Field(description="Position of the record in the request.")
        error: str

    class Predictions(BaseModel):
        model: str
        version: str
        method: Method
        predictions: list[Any] = Field(
            description="One answer per record (a list per record for predict_proba and "
            "the like; null for a record listed in errors)."
        )
        errors: list[RecordError]
        classes: list[Any] | None = Field(
            None, description="Class labels, in the order of a per-class answer's values."
        )

    class Prediction(BaseModel):
        model: str
        version: str
        method: Method
        prediction: Any
        classes: list[Any] | None = None

    class ModelInfo(BaseModel):
        model: str = Field(description="The reference served (NAME@ALIAS or a file name).")
        name: str
        version: str
        signature: dict[str, Any]
        methods: list[Method]
        default_method: Method
        classes: list[Any] | None = None

    class Error(BaseModel):
        error: str
        version: str | None = None

    assert tuple(Method.__args__) == METHODS  # type: ignore[attr-defined]
    return {
        "Envelope": Envelope,
        "RecordError": RecordError,
        "Predictions": Predictions,
        "Prediction": Prediction,
        "ModelInfo": ModelInfo,
        "Error": Error,
    }


_MODELS: dict[str, Any] = {}


def models() -> dict[str, Any]:
    if not _MODELS:
        _MODELS.update(_models())
    return _MODELS


def openapi(handle: ModelHandle, default_method: str = "predict") -> dict[str, Any]:
    """The OpenAPI 3.1 description of the server for the model ``handle`` holds now."""
    from pydantic import Field, create_model
    from pydantic.json_schema import models_json_schema

    m = models()
    record = record_model(handle.signature)
    fields: dict[str, Any] = {
        "records": (list.__class_getitem__(record), Field(max_length=MAX_RECORDS)),
        "method": (m["Envelope"].model_fields["method"].annotation, None),
    }
    request = create_model("PredictRequest", **fields)
    with _quiet_pydantic():
        _, defs = models_json_schema(
            [
                (request, "validation"),
                (record, "validation"),
                (m["Predictions"], "serialization"),
                (m["Prediction"], "serialization"),
                (m["ModelInfo"], "serialization"),
                (m["Error"], "serialization"),
            ],
            ref_template="#/components/schemas/{model}",
        )

    def ref(name: str) -> dict[str, Any]:
        return {"$ref": f"#/components/schemas/{name}"}

    def answer(name: str, what: str) -> dict[str, Any]:
        return {"description": what, "content": {"application/json": {"schema": ref(name)}}}

    secured: list[dict[str, list[str]]] = (
        [{"bearer": []}] if getattr(handle, "_token_required", False) else []
    )
    method_param = {
        "name": "method",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "enum": list(METHODS), "default": default_method},
        "description": "The model method to call (see GET /model for the ones it has).",
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"safepoint serve: {handle.label}",
            "version": str(handle.version),
            "description": "Predictions from a model loaded safely (no code from the file "
            "ran). Records are validated against the model's signature.",
        },
        "paths": {
            "/predict": {
                "post": {
                    "summary": "Predict for one record, a list, or {records, method}",
                    "parameters": [method_param],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        ref("Record"),
                                        {"type": "array", "items": ref("Record")},
                                        ref("PredictRequest"),
                                    ]
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "Answers by position (one record: `prediction`)",
                            "content": {
                                "application/json": {
                                    "schema": {"oneOf": [ref("Predictions"), ref("Prediction")]}
                                }
                            },
                        },
                        "400": answer("Error", "The body is not JSON or not records"),
                        "401": answer("Error", "Missing or wrong bearer token"),
                        "413": answer("Error", "The body is too large"),
                        "422": answer("Error", "The record (or the method) was refused"),
                    },
                    "security": secured,
                }
            },
            "/model": {
                "get": {
                    "summary": "The model served: name, version, signature, methods",
                    "responses": {"200": answer("ModelInfo", "The model")},
                    "security": secured,
                }
            },
            "/ready": {
                "get": {
                    "summary": "A model is loaded (503 if not)",
                    "responses": {"200": {"description": "Ready"}, "503": {"description": "Not"}},
                }
            },
            "/health": {
                "get": {
                    "summary": "The process is up",
                    "responses": {"200": {"description": "Up"}},
                }
            },
        },
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


# -- the app -------------------------------------------------------------------------------------
def create_app(
    handle: ModelHandle,
    *,
    token: str | None = None,
    reload_interval: float = 2.0,
    method: str = "predict",
    allowed_hosts: set[str] | None = None,
) -> Any:
    """The ASGI application for ``handle``.

    ``method`` is the default model method (a request may ask for another with
    ``?method=``); ``allowed_hosts`` the ``Host`` names answered (see :func:`host_names`;
    None answers any).
    """
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    handle.check_method(method)
    handle._token_required = bool(token)  # type: ignore[attr-defined]
    stats = {"requests": 0, "records": 0, "reloads": 0, "started": time.time()}

    def authorized(request: Request) -> bool:
        if not token:
            return True
        got = request.headers.get("authorization", "")
        return hmac.compare_digest(got.encode(), f"Bearer {token}".encode())

    def unauthorized() -> JSONResponse:
        return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> JSONResponse:
        model, version = handle.current()
        if model is None:
            return JSONResponse({"ready": False}, status_code=503)
        return JSONResponse(
            {
                "ready": True,
                "model": handle.label,
                "version": version,
                **{k: v for k, v in stats.items() if k != "started"},
            }
        )

    async def model_info(request: Request) -> JSONResponse:
        if not authorized(request):
            return unauthorized()
        model, version = handle.current()
        info = models()["ModelInfo"](
            model=handle.label,
            name=str(getattr(handle, "name", handle.label)),
            version=str(version),
            signature=handle.signature,
            methods=handle.methods(model),
            default_method=method,
            classes=handle.classes(model),
        )
        return JSONResponse(info.model_dump(mode="json"))

    async def openapi_json(request: Request) -> JSONResponse:
        if not authorized(request):
            return unauthorized()
        return JSONResponse(openapi(handle, method))

    async def predict(request: Request) -> JSONResponse:
        if not authorized(request):
            return unauthorized()
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse({"error": f"body larger than {MAX_BODY} bytes"}, status_code=413)
        try:
            payload = _json_loads(body)
            records, asked = _records(payload)
        except SchemaError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        chosen = request.query_params.get("method") or asked or method
        model, version = handle.current()
        try:
            handle.check_method(chosen, model)
            preds, errors = await asyncio.to_thread(_score, handle, model, records, chosen)
        except SafepointError as exc:
            return JSONResponse({"error": str(exc), "version": version}, status_code=422)
        except Exception as exc:  # never a bare 500 page: say what failed
            log.exception("predict failed on version %s", version)
            return JSONResponse(
                {"error": f"{type(exc).__name__}: {exc}", "version": version}, status_code=500
            )
        stats["requests"] += 1
        stats["records"] += len(records)
        single = isinstance(payload, dict) and "records" not in payload
        out: dict[str, Any] = {"model": handle.label, "version": version, "method": chosen}
        if chosen != "predict":
            out["classes"] = handle.classes(model)
        if single:
            if errors:
                return JSONResponse({**out, "error": errors[0]["error"]}, status_code=422)
            out["prediction"] = preds[0]
        else:
            out["predictions"] = preds
            out["errors"] = errors
        return JSONResponse(out)

    async def logged(request: Request, call: Callable[[], Awaitable[Any]]) -> Any:
        t0 = time.perf_counter()
        response = await call()
        log.info(
            "%s %s -> %d in %.1f ms (version %s)",
            request.method,
            request.url.path,
            response.status_code,
            1000 * (time.perf_counter() - t0),
            handle.current()[1],
        )
        return response

    def route(path: str, fn: Callable[[Request], Awaitable[Any]], **kw: Any) -> Route:
        async def endpoint(request: Request) -> Any:
            return await logged(request, lambda: fn(request))

        return Route(path, endpoint, **kw)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async def watch() -> None:
            while True:
                await asyncio.sleep(reload_interval)
                before = handle.current()[1]
                try:
                    switched = await asyncio.to_thread(handle.refresh)
                except Exception as exc:  # a store hiccup must not take the server down
                    log.warning("checking %s for a new version failed: %s", handle.label, exc)
                    continue
                if switched:
                    stats["reloads"] += 1
                    log.info("reloaded %s: version %s -> %s", handle.label, before, handle.version)

        task = asyncio.create_task(watch())
        log.info("serving %s version %s", handle.label, handle.version)
        try:
            yield
        finally:
            task.cancel()

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/ready", ready),
            route("/model", model_info),
            route("/openapi.json", openapi_json),
            route("/predict", predict, methods=["POST"]),
        ],
        middleware=[Middleware(HostCheck, names=allowed_hosts)],
        lifespan=lifespan,
    )


def _json_loads(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SchemaError(f"the body is not JSON: {exc}") from None


def _records(payload: Any) -> tuple[list[dict[str, Any]], str | None]:
    """The records of a body, and the method it asks for (``{"records", "method"}`` only)."""
    from pydantic import ValidationError

    if isinstance(payload, dict) and "records" in payload:
        try:
            env = models()["Envelope"].model_validate(payload)
        except ValidationError as exc:
            raise SchemaError(
                '{"records": [...], "method": ...}: ' + _why(exc.errors(), {})
            ) from None
        return list(env.records), env.method
    if isinstance(payload, dict):
        payload = [payload]
    if not isinstance(payload, list) or not all(isinstance(r, dict) for r in payload):
        raise SchemaError('send a JSON object, a list of objects, or {"records": [...]}')
    if len(payload) > MAX_RECORDS:
        raise SchemaError(f"at most {MAX_RECORDS} records per request")
    return payload, None


def _why(errors: list[Any], aliases: dict[str, str]) -> str:
    """A validation error in a sentence: ``missing feature(s) ['b']; a: ... (got true)``."""
    missing = [
        aliases.get(str(e["loc"][0]), str(e["loc"][0])) for e in errors if e["type"] == "missing"
    ]
    parts = [f"missing feature(s) {missing}"] if missing else []
    for e in errors:
        if e["type"] == "missing":
            continue
        where = ".".join(aliases.get(str(x), str(x)) for x in e["loc"])
        msg = str(e["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {msg} (got {json.dumps(e.get('input'), default=str)})")
    return "; ".join(parts)


def _validate(
    handle: ModelHandle, records: list[dict[str, Any]]
) -> tuple[list[tuple[int, dict[str, Any]]], dict[int, str]]:
    """Check each record against the signature; valid ones with null as NaN."""
    from pydantic import ValidationError

    sig = handle.signature
    names = [str(n) for n in sig.get("feature_names") or []]
    record = record_model(sig)
    numeric = {n for n in names if _numeric(str((sig.get("dtypes") or {}).get(n, "float64")))}
    good: list[tuple[int, dict[str, Any]]] = []
    errors: dict[int, str] = {}
    for i, rec in enumerate(records):
        if not names:  # only a feature count is known: every non-id value is a feature
            flags = [k for k, v in rec.items() if isinstance(v, bool) and k not in ("id", "key")]
            if flags:
                errors[i] = f"{flags[0]}: a numeric feature takes a number, not true/false"
                continue
            good.append((i, rec))
            continue
        try:
            valid = record.model_validate(rec)
        except ValidationError as exc:
            errors[i] = _why(exc.errors(), {"f" + str(j): n for j, n in enumerate(names)})
            continue
        row = valid.model_dump(by_alias=True)
        for n in numeric:
            if row.get(n) is None:
                row[n] = math.nan
        good.append((i, row))
    return good, errors


def _score(
    handle: ModelHandle, model: Any, records: list[dict[str, Any]], method: str = "predict"
) -> tuple[list[Any], list[dict[str, Any]]]:
    """Answers by position; a record that fails gets ``None`` and an error entry."""
    if not records:
        return [], []
    good, errors = _validate(handle, records)
    if not good and not handle.signature.get("feature_names"):
        handle.check_input(pd.DataFrame.from_records(records))
    frame = pd.DataFrame.from_records([r for _, r in good], index=[i for i, _ in good])
    checked, bad = handle.coerce(frame) if len(frame) else (frame, [])
    errors.update({int(i): why for i, why in bad})
    preds: list[Any] = [None] * len(records)
    if len(checked):
        try:
            values = handle.predict(checked, model, method).tolist()
            pairs = list(zip(checked.index, values, strict=True))
        except (ValueError, TypeError) as exc:
            # isolate the records the model rejects; answer the others
            pairs = []
            for pos in checked.index:
                try:
                    one = handle.predict(checked.loc[[pos]], model, method)
                    pairs.append((pos, one.tolist()[0]))
                except (ValueError, TypeError):
                    errors[int(pos)] = f"the model rejected the record: {exc}"
        for pos, v in pairs:
            preds[int(pos)] = v
    return [_plain(p) for p in preds], [
        {"index": i, "error": why} for i, why in sorted(errors.items())
    ]


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def serve(
    handle: ModelHandle,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    token: str | None = None,
    reload_interval: float = 2.0,
    log_level: str = "warning",
    method: str = "predict",
    allowed_hosts: Iterable[str] = (),
) -> None:
    """Run the server until interrupted (see :func:`create_app`)."""
    check_bind(host, token)
    try:
        import uvicorn
    except ModuleNotFoundError as exc:
        from ...errors import MissingDependencyError

        raise MissingDependencyError("serve", exc.name or "uvicorn") from None
    uvicorn.run(
        create_app(
            handle,
            token=token,
            reload_interval=reload_interval,
            method=method,
            allowed_hosts=host_names(host, allowed_hosts),
        ),
        host=host,
        port=port,
        log_level=log_level,
    )
