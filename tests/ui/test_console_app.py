"""The console app's structure, in process over HTTP (httpx's ASGI transport, real stores).

Routes are module-level functions of ``safepoint.ui.app`` that find their store and
settings on ``request.app.state``: no closure over ``create_app``'s arguments, so
two consoles in one process each serve their own store.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("starlette")
pytest.importorskip("jinja2")
from sklearn.dummy import DummyClassifier
from starlette.routing import Route

import safepoint as sp
from safepoint.ui import app as app_module


def test_no_function_of_the_app_module_defines_another() -> None:
    tree = ast.parse(inspect.getsource(app_module))
    nested = [
        f"{outer.name}.{inner.name}"
        for outer in ast.walk(tree)
        if isinstance(outer, ast.FunctionDef | ast.AsyncFunctionDef)
        for inner in ast.walk(outer)
        if inner is not outer and isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef)
    ]
    # SecurityHeaders.__call__ wraps ASGI's send: middleware, not a route
    assert nested == ["__call__.send_with_headers"]


def test_every_route_is_a_module_level_function(tmp_path: Path) -> None:
    app = app_module.create_app(sp.Store(tmp_path / "s"))
    endpoints = [r.endpoint for r in app.routes if isinstance(r, Route)]
    assert len(endpoints) >= 12
    for endpoint in endpoints:
        assert getattr(app_module, endpoint.__name__) is endpoint


def _store(path: Path, name: str) -> Any:
    store = sp.Store(path)
    store.put(name, DummyClassifier().fit([[0], [1]], [0, 1]), metrics={"auc": 0.5})
    return store


def _get_all(app: Any, requests: list[tuple[str, str]]) -> list[httpx.Response]:
    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            return [await c.request(method, url) for method, url in requests]

    return asyncio.run(go())


def test_two_consoles_in_one_process_serve_their_own_store(tmp_path: Path) -> None:
    a = app_module.create_app(_store(tmp_path / "a", "team-a/model"))
    b = app_module.create_app(
        _store(tmp_path / "b", "team-b/model"), allow_writes=True, token="t0ken"
    )
    page_a, alias_a, other_a = _get_all(
        a, [("GET", "/"), ("POST", "/alias/team-a/model"), ("GET", "/model/team-b/model")]
    )
    page_b, version_b = _get_all(b, [("GET", "/"), ("GET", "/version/1/team-b/model")])
    assert page_a.status_code == page_b.status_code == 200
    assert "team-a/model" in page_a.text and "team-b/model" not in page_a.text
    assert "team-b/model" in page_b.text and "team-a/model" not in page_b.text
    # settings are per app too: a is read-only (403 before the form is read)
    assert alias_a.status_code == 403
    assert version_b.status_code == 200 and "team-b/model" in version_b.text
    assert other_a.status_code == 404
    assert "content-security-policy" in page_a.headers
