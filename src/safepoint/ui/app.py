"""The web console: Starlette + Jinja2 templates + Plotly, on top of a Store.

Safe by default: it binds to 127.0.0.1 (any other address needs a token, and
then every page asks for it); it is read-only unless started with
``allow_writes`` and a token, and a write (moving an alias) also needs the
token in the form, a CSRF token matching the page's cookie, a same-origin
request and the compare-and-swap of the store. Model names go through the
store's name validation (no path traversal). Pages read manifests and the
catalog only: nothing is deserialised to be shown.
"""

from __future__ import annotations

import hmac
import secrets
import time
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import urlparse

from ..errors import AliasConflictError, InvalidNameError, NotFoundError, SafepointError
from . import data

__all__ = ["PAGE_SIZE", "create_app"]

#: models per page of the list
PAGE_SIZE = 100


def _filesize(n: Any) -> str:
    try:
        x = float(n)
    except (TypeError, ValueError):
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if x < 1024 or unit == "GiB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return str(n)


def _ts(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return value.isoformat()[:19]
    try:
        return datetime.fromtimestamp(float(value), UTC).isoformat()[:19]
    except (TypeError, ValueError):
        return str(value)


def create_app(
    store: Any,
    *,
    allow_writes: bool = False,
    token: str | None = None,
    require_token_for_reads: bool = False,
) -> Any:
    """The ASGI app for ``store`` (a :class:`~safepoint.stores.Store`)."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse, RedirectResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles
    from starlette.templating import Jinja2Templates

    if allow_writes and not token:
        raise InvalidNameError(
            "--allow-writes needs a token (--token env:VAR): every write asks for it"
        )
    pkg = resources.files("safepoint.ui")
    templates = Jinja2Templates(directory=str(pkg / "templates"))
    templates.env.filters["filesize"] = _filesize
    templates.env.filters["ts"] = _ts

    def page(request: Request, template: str, status: int = 200, **ctx: Any) -> Response:
        csrf = request.cookies.get("sp_csrf") or secrets.token_urlsafe(24)
        response = templates.TemplateResponse(
            request,
            template,
            {
                "store_url": store.url,
                "writes": allow_writes,
                "csrf": csrf,
                "token_required": bool(token),
                **ctx,
            },
            status_code=status,
        )
        response.set_cookie("sp_csrf", csrf, httponly=True, samesite="strict")
        return response

    def check_read(request: Request) -> None:
        if not require_token_for_reads or token is None:
            return
        got = request.cookies.get("sp_token") or request.headers.get("authorization", "")[7:]
        if not hmac.compare_digest(got.encode(), token.encode()):
            raise HTTPException(401, "this console needs its token: open /login")

    async def models(request: Request) -> Response:
        check_read(request)
        q = request.query_params.get("q", "")
        sort = request.query_params.get("sort", "updated")
        rows = data.models(store, q, sort)
        pages = max(1, -(-len(rows) // PAGE_SIZE))
        try:
            page_no = min(max(1, int(request.query_params.get("page", "1"))), pages)
        except ValueError:
            page_no = 1
        shown = rows[(page_no - 1) * PAGE_SIZE : page_no * PAGE_SIZE]
        # one url_for, not one per row: names are validated paths, safe in a URL
        base = str(request.url_for("model", name="x"))[:-1]
        return page(
            request,
            "models.html",
            rows=shown,
            q=q,
            sort=sort,
            total=len(rows),
            pages=pages,
            page_no=page_no,
            model_base=base,
        )

    async def model(request: Request) -> Response:
        check_read(request)
        name = request.path_params["name"]
        versions = sorted(store.versions(name), key=lambda v: -v.version)
        if not versions:
            raise NotFoundError(f"model {name!r} has no versions")
        return page(
            request,
            "model.html",
            name=name,
            versions=versions,
            aliases=store.aliases(name),
            figure=data.metrics_figure(versions),
        )

    async def version(
        request: Request, message: str = "", message_class: str = "", status: int = 200
    ) -> Response:
        check_read(request)
        name = request.path_params["name"]
        view = data.version_view(store, name, request.path_params["version"])
        return page(
            request,
            "version.html",
            status=status,
            mv=view.mv,
            info=view.inspection,
            env_rows=view.env_rows,
            lineage=view.lineage,
            verify=view.verify,
            params=view.params,
            aliases=store.aliases(name),
            message=message,
            message_class=message_class,
        )

    async def ref(request: Request) -> Response:
        from ..stores.names import parse_ref

        name, sel = parse_ref(request.path_params["ref"])
        mv = store.info(name, sel)
        return RedirectResponse(request.url_for("version", name=name, version=mv.version))

    async def compare(request: Request) -> Response:
        check_read(request)
        name = request.path_params["name"]
        try:
            a = int(request.query_params.get("a", ""))
            b = int(request.query_params.get("b", ""))
        except ValueError:
            raise InvalidNameError("compare needs two version numbers, ?a=1&b=2") from None
        va, vb = data.version_view(store, name, a), data.version_view(store, name, b)
        rows: list[tuple[str, Any, Any]] = [
            ("created", va.mv.created.isoformat()[:19], vb.mv.created.isoformat()[:19]),
            ("size", _filesize(va.mv.size), _filesize(vb.mv.size)),
            ("type", va.inspection.root_type, vb.inspection.root_type),
            ("aliases", ", ".join(va.mv.aliases), ", ".join(vb.mv.aliases)),
        ]
        for section, fa, fb in (
            ("param", va.params, vb.params),
            ("metric", va.mv.metrics, vb.mv.metrics),
            ("metadata", va.mv.metadata, vb.mv.metadata),
        ):
            for key in sorted(set(fa) | set(fb)):
                rows.append((f"{section} {key}", fa.get(key, "—"), fb.get(key, "—")))
        env = {r[0]: r[1] for r in va.env_rows}, {r[0]: r[1] for r in vb.env_rows}
        for key in sorted(set(env[0]) | set(env[1])):
            rows.append((f"env {key}", env[0].get(key, "—"), env[1].get(key, "—")))
        return page(request, "compare.html", name=name, a=va, b=vb, rows=rows)

    async def move_alias(request: Request) -> Response:
        name = request.path_params["name"]
        if not allow_writes:
            raise HTTPException(403, "this console is read-only (start it with --allow-writes)")
        form = await request.form()
        origin = request.headers.get("origin") or request.headers.get("referer")
        if origin and urlparse(origin).netloc != request.headers.get("host"):
            raise HTTPException(403, "cross-origin write refused")
        cookie = request.cookies.get("sp_csrf", "")
        if not cookie or not hmac.compare_digest(str(form.get("csrf", "")), cookie):
            raise HTTPException(403, "CSRF check failed: reload the page and try again")
        if not hmac.compare_digest(str(form.get("token", "")).encode(), (token or "").encode()):
            raise HTTPException(401, "wrong token")
        try:
            target = int(str(form.get("version", "")))
            expected_raw = str(form.get("expected", "")).strip()
            expected = int(expected_raw) if expected_raw else None
        except ValueError:
            raise InvalidNameError("version and expected must be version numbers") from None
        alias = str(form.get("alias", ""))
        request.path_params["version"] = target
        try:
            store.set_alias(name, alias, target, expected=expected)
        except AliasConflictError as exc:
            return await version(
                request, message=f"Refused: {exc}", message_class="bad", status=409
            )
        return await version(
            request, message=f"Moved {alias} to version {target}.", message_class="good"
        )

    async def audit(request: Request) -> Response:
        check_read(request)
        return page(request, "audit.html", entries=store.log(limit=500))

    async def runs(request: Request) -> Response:
        check_read(request)
        return page(request, "runs.html", rows=store.runs.list(limit=200))

    async def run(request: Request) -> Response:
        check_read(request)
        info = store.runs.get(request.path_params["run_id"])
        search = data.search_results(store, info) if info.kind == "search" else None
        return page(request, "run.html", run=info, search=search)

    async def api_run(request: Request) -> Response:
        check_read(request)
        info = store.runs.get(request.path_params["run_id"])
        return JSONResponse(
            {
                "id": info.id,
                "kind": info.kind,
                "status": info.status,
                "progress": info.progress,
                "state": info.state,
                "now": time.time(),
            }
        )

    async def checkpointers(request: Request) -> Response:
        check_read(request)
        selected = request.query_params.get("name")
        keys = data.checkpointer_keys(store, selected) if selected else []
        return page(
            request,
            "checkpointers.html",
            namespaces=data.checkpointer_namespaces(store),
            selected=selected,
            keys=keys,
        )

    async def login(request: Request) -> Response:
        got = request.query_params.get("token", "")
        if token is None or not hmac.compare_digest(got.encode(), token.encode()):
            return Response("open /login?token=... with the console's token", status_code=401)
        response = RedirectResponse(request.url_for("models"))
        response.set_cookie("sp_token", got, httponly=True, samesite="strict")
        return response

    async def plotly_js(request: Request) -> Response:
        from plotly.offline import get_plotlyjs

        return Response(
            get_plotlyjs(),
            media_type="application/javascript",
            headers={"cache-control": "max-age=86400"},
        )

    async def on_safepoint_error(request: Request, exc: Exception) -> Response:
        status = 404 if isinstance(exc, NotFoundError) else 400
        return templates.TemplateResponse(
            request,
            "error.html",
            {"store_url": store.url, "writes": allow_writes, "status": status, "message": str(exc)},
            status_code=status,
        )

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return templates.TemplateResponse(
            request,
            "error.html",
            {
                "store_url": store.url,
                "writes": allow_writes,
                "status": exc.status_code,
                "message": exc.detail,
            },
            status_code=exc.status_code,
        )

    return Starlette(
        routes=[
            Route("/", models, name="models"),
            Route("/model/{name:path}", model, name="model"),
            Route("/version/{version:int}/{name:path}", version, name="version"),
            Route("/ref/{ref:path}", ref, name="ref"),
            Route("/compare/{name:path}", compare, name="compare"),
            Route("/alias/{name:path}", move_alias, methods=["POST"], name="move_alias"),
            Route("/audit", audit, name="audit"),
            Route("/runs", runs, name="runs"),
            Route("/runs/{run_id}", run, name="run"),
            Route("/api/runs/{run_id}", api_run, name="api_run"),
            Route("/checkpointers", checkpointers, name="checkpointers"),
            Route("/login", login, name="login"),
            Route("/static/plotly.min.js", plotly_js),
            Mount("/static", StaticFiles(directory=str(pkg / "static")), name="static"),
        ],
        exception_handlers={SafepointError: on_safepoint_error, HTTPException: on_http_error},
    )
