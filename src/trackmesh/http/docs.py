"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) served from the ``fastapi-offline`` package's copies
of their assets, so the API docs render on a machine without internet (FastAPI's defaults load
them from a CDN). FastAPI documents this self-hosting: its ``get_swagger_ui_html`` and
``get_redoc_html`` with local asset URLs.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_PATH = "/docs-assets"
# The pages may load nothing from elsewhere: ReDoc's menu footer would fetch its logo from a CDN
# (no option turns it off); blocked, it falls back to text. Inline scripts start the two UIs;
# ReDoc's search runs in a blob: worker.
DOCS_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; worker-src 'self' blob:; connect-src 'self'; font-src 'self' data:"
)


def _local_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page


def create_docs_app(**kwargs: object) -> FastAPI:
    """A FastAPI app whose /docs and /redoc use local assets; ``kwargs`` go to FastAPI."""
    app = FastAPI(docs_url=None, redoc_url=None, **kwargs)  # type: ignore[arg-type]
    install_docs(app)
    return app


def install_docs(app: FastAPI) -> None:
    assets = str(files("fastapi_offline") / "static")
    app.mount(ASSETS_PATH, StaticFiles(directory=assets), name="docs-assets")
    title = app.title

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return _local_only(get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{title} - API docs",
            oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
        ))

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return _local_only(get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{title} - API reference",
            redoc_js_url=f"{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_PATH}/favicon.png",
            with_google_fonts=False,
        ))
