"""``/docs`` (Swagger UI) and ``/redoc`` from local files, in place of FastAPI's CDN pages."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import Response

from keras_vae.serving.explorer.assets import REDOC_LOGO_URL, StaticSender, docs_assets
from keras_vae.serving.explorer.routes import not_found

__all__ = ["docs_router", "OAUTH2_REDIRECT_URL"]

OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"


def docs_router(sender: StaticSender | None = None) -> APIRouter:
    """The API docs pages of the app they are included in (kept out of its OpenAPI schema).

    Without the npm packages (a pip-only install) they are FastAPI's stock pages,
    which load their scripts from a CDN.
    """
    router = APIRouter(include_in_schema=False)
    docs = docs_assets()
    sender = sender or StaticSender()
    redoc_js: bytes | None = None
    if docs is not None:
        redoc_js = docs["redoc.standalone.js"].read_bytes().replace(
            REDOC_LOGO_URL.encode(), b"data:,")
    get = dict(methods=["GET", "HEAD"])

    def urls(request: Request) -> tuple[str, str]:
        root = request.scope.get("root_path", "").rstrip("/")
        return root + request.app.openapi_url, root + "/explorer/docs/"

    @router.api_route("/explorer/docs/{name}", **get)
    async def docs_asset(name: str, request: Request) -> Response:
        if docs is None or name not in docs:
            raise not_found(f"/explorer/docs/{name}")
        return await sender.send(request, docs[name],
                                 redoc_js if name == "redoc.standalone.js" else None)

    @router.api_route("/docs", **get)
    async def swagger_ui(request: Request) -> Response:
        openapi, assets = urls(request)
        title = f"{request.app.title} - Swagger UI"
        if docs is None:
            return get_swagger_ui_html(openapi_url=openapi, title=title,
                                       oauth2_redirect_url=OAUTH2_REDIRECT_URL)
        return get_swagger_ui_html(
            openapi_url=openapi, title=title, oauth2_redirect_url=OAUTH2_REDIRECT_URL,
            swagger_js_url=assets + "swagger-ui-bundle.js",
            swagger_css_url=assets + "swagger-ui.css",
            swagger_favicon_url=assets + "favicon-32x32.png")

    @router.api_route(OAUTH2_REDIRECT_URL, **get)
    async def swagger_ui_redirect() -> Response:
        return get_swagger_ui_oauth2_redirect_html()

    @router.api_route("/redoc", **get)
    async def redoc(request: Request) -> Response:
        openapi, assets = urls(request)
        title = f"{request.app.title} - ReDoc"
        if docs is None:
            return get_redoc_html(openapi_url=openapi, title=title)
        return get_redoc_html(openapi_url=openapi, title=title,
                              redoc_js_url=assets + "redoc.standalone.js",
                              redoc_favicon_url=assets + "favicon-32x32.png", with_google_fonts=False)

    return router
