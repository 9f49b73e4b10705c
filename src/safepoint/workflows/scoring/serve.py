"""Online scoring: the same model over HTTP (Starlette + uvicorn).

Endpoints:

* ``POST /predict``: a JSON record, a list of records, or ``{"records": [...]}``;
  answers ``{"model", "version", "predictions", "errors"}``. Records are checked
  against the model's signature; a record that fails is reported in ``errors``
  by position, the others are still answered.
* ``GET /health``: the process is up. ``GET /ready``: a model is loaded (503 if not).

The model is reloaded in the background when its alias moves; requests in
flight finish on the version they started with, so none is dropped. The
server binds to 127.0.0.1; any other address needs a token, which clients send
as ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pandas as pd

from ...errors import SafepointError, SchemaError
from .model import ModelHandle

__all__ = ["check_bind", "create_app", "serve"]

MAX_BODY = 32 * 2**20
MAX_RECORDS = 100_000


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond loopback without a token."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and not token:
        raise SchemaError(
            f"refusing to serve on {host} without a token: anyone who can reach it could use "
            "the model. Pass --token env:VAR (clients send 'Authorization: Bearer <token>'), "
            "or bind to 127.0.0.1"
        )


def create_app(
    handle: ModelHandle, *, token: str | None = None, reload_interval: float = 2.0
) -> Any:
    """The ASGI application for ``handle``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    stats = {"requests": 0, "records": 0, "reloads": 0, "started": time.time()}

    def authorized(request: Request) -> bool:
        if not token:
            return True
        got = request.headers.get("authorization", "")
        return hmac.compare_digest(got.encode(), f"Bearer {token}".encode())

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

    async def predict(request: Request) -> JSONResponse:
        if not authorized(request):
            return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse({"error": f"body larger than {MAX_BODY} bytes"}, status_code=413)
        try:
            payload = _json_loads(body)
            records = _records(payload)
        except SchemaError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        model, version = handle.current()
        try:
            preds, errors = await asyncio.to_thread(_score, handle, model, records)
        except SafepointError as exc:
            return JSONResponse({"error": str(exc), "version": version}, status_code=422)
        except Exception as exc:  # never a bare 500 page: say what failed
            return JSONResponse(
                {"error": f"{type(exc).__name__}: {exc}", "version": version}, status_code=500
            )
        stats["requests"] += 1
        stats["records"] += len(records)
        single = isinstance(payload, dict) and "records" not in payload
        out: dict[str, Any] = {"model": handle.label, "version": version}
        if single:
            if errors:
                return JSONResponse({**out, "error": errors[0]["error"]}, status_code=422)
            out["prediction"] = preds[0]
        else:
            out["predictions"] = preds
            out["errors"] = errors
        return JSONResponse(out)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async def watch() -> None:
            while True:
                await asyncio.sleep(reload_interval)
                try:
                    if await asyncio.to_thread(handle.refresh):
                        stats["reloads"] += 1
                except Exception:  # a store hiccup must not take the server down
                    continue

        task = asyncio.create_task(watch())
        try:
            yield
        finally:
            task.cancel()

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/ready", ready),
            Route("/predict", predict, methods=["POST"]),
        ],
        lifespan=lifespan,
    )


def _json_loads(body: bytes) -> Any:
    import json

    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SchemaError(f"the body is not JSON: {exc}") from None


def _records(payload: Any) -> list[dict[str, Any]]:
    if isinstance(payload, dict) and "records" in payload:
        payload = payload["records"]
    if isinstance(payload, dict):
        payload = [payload]
    if not isinstance(payload, list) or not all(isinstance(r, dict) for r in payload):
        raise SchemaError('send a JSON object, a list of objects, or {"records": [...]}')
    if len(payload) > MAX_RECORDS:
        raise SchemaError(f"at most {MAX_RECORDS} records per request")
    return payload


def _score(
    handle: ModelHandle, model: Any, records: list[dict[str, Any]]
) -> tuple[list[Any], list[dict[str, Any]]]:
    """Predictions by position; a record that fails gets ``None`` and an error entry."""
    if not records:
        return [], []
    names = handle.signature.get("feature_names") or []
    errors: dict[int, str] = {}
    for i, rec in enumerate(records):
        missing = [f for f in names if rec.get(f) is None]
        if missing:
            errors[i] = f"missing feature(s) {missing}"
    frame = pd.DataFrame.from_records(records)
    if len(errors) == len(records):
        handle.check_input(frame)
    frame = frame.drop(index=list(errors))
    good, bad = handle.coerce(frame) if len(frame) else (frame, [])
    errors.update({int(i): why for i, why in bad})
    preds: list[Any] = [None] * len(records)
    if len(good):
        try:
            values = handle.predict(good, model).tolist()
            pairs = list(zip(good.index, values, strict=True))
        except (ValueError, TypeError) as exc:
            # isolate the records the model rejects; answer the others
            pairs = []
            for pos in good.index:
                try:
                    pairs.append((pos, handle.predict(good.loc[[pos]], model).tolist()[0]))
                except (ValueError, TypeError):
                    errors[int(pos)] = f"the model rejected the record: {exc}"
        for pos, v in pairs:
            preds[int(pos)] = v
    return [_plain(p) for p in preds], [
        {"index": i, "error": why} for i, why in sorted(errors.items())
    ]


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


def serve(
    handle: ModelHandle,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    token: str | None = None,
    reload_interval: float = 2.0,
    log_level: str = "warning",
) -> None:
    """Run the server until interrupted."""
    check_bind(host, token)
    import uvicorn

    uvicorn.run(
        create_app(handle, token=token, reload_interval=reload_interval),
        host=host,
        port=port,
        log_level=log_level,
    )
