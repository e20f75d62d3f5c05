"""``GET /docs``: the interactive API page, served by this server and never from a CDN.

The web framework's own page loads Swagger UI from a CDN (and its favicon from another
site): opening /docs would run code from a third party in a page that may call the
server. Here the page and its assets come from the ``swagger-ui-bundle-v2`` package
(Swagger UI 5, which reads the OpenAPI 3.1 document); without it, /docs is a short
local page pointing at ``/openapi.json``. The online spec validator is off.
"""

from __future__ import annotations

import html
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response

ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
          "favicon-32x32.png": "image/png"}
PREFIX = "/docs/assets/"
PACKAGE = "swagger-ui-bundle-v2"


def swagger_dir() -> Path | None:
    """Swagger UI 5's files from the installed bundle package; None without one."""
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    path = Path(str(swagger_ui_bundle.swagger_ui_path))
    # version 4 (the package swagger-ui-bundle) cannot show an OpenAPI 3.1 document
    major = path.name.removeprefix("swagger-ui-").partition(".")[0]
    if not major.isdigit() or int(major) < 5 or not all((path / a).is_file() for a in ASSETS):
        return None
    return path


def add_docs(app: FastAPI) -> None:
    """``GET /docs`` and its assets (create the app with ``docs_url=None``)."""
    assets = swagger_dir()

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        if assets is None:
            return HTMLResponse(_fallback(app.title))
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title=app.title,
            swagger_js_url=PREFIX + "swagger-ui-bundle.js",
            swagger_css_url=PREFIX + "swagger-ui.css",
            swagger_favicon_url=PREFIX + "favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None})

    @app.get(PREFIX + "{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if assets is None or name not in ASSETS:
            return Response(status_code=404)
        return FileResponse(assets / name, media_type=ASSETS[name],
                            headers={"cache-control": "max-age=86400"})


def _fallback(title: str) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title></head><body><h1>{html.escape(title)}</h1><p>The interactive page "
            f"needs the Python package <code>{PACKAGE}</code> (Swagger UI, served by this "
            "server): <code>pip install 'swagger-ui-bundle-v2&gt;=5'</code>. The API is "
            "described in <a href='/openapi.json'>/openapi.json</a> and in docs/serve.md."
            "</p></body></html>")
