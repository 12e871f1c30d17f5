"""``/``: the front door, the playground page; ``/playground/...``: its scripts and styles.

``GET`` and ``HEAD /`` answer the playground (``service/static/playground``): type a function, see
it and its derivative, its autograd graph, its Jacobian or Hessian, its profile, and the curl and
Python calls that do the same; train a model and watch its loss. The page is static HTML, CSS and
ES modules shipped in the package, and its Content-Security-Policy allows nothing but this origin.
A client that asks for ``application/json`` and not HTML gets the entry points as JSON instead.
The same links go in an RFC 8631 ``Link`` header (``service-doc``, ``service-desc``). The page and
its assets are open without the API key, like the docs (the page asks for the key when the server
has one), and are not API operations, so they stay out of the OpenAPI document.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

from service import codec
from service.dependencies import AppSettings

router = APIRouter(include_in_schema=False)

PLAYGROUND = Path(__file__).resolve().parents[1] / "static" / "playground"
# Where the page's own files are served (mounted by create_app); the page names them relative to itself.
ASSETS_PATH = "/playground"
# Nothing but this origin: no CDN, no inline script or style, no frames, no form posts elsewhere.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
                           "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
                           "form-action 'self'; frame-ancestors 'none'")


# (name, path, what it is). The docs paths are FastAPIOffline's defaults, which create_app keeps
# (it hides them from app.docs_url and app.redoc_url, so they cannot be read back from the app).
ENTRY_POINTS = (
    ("playground", "/", "the playground: try a function, see its derivatives, train a model"),
    ("docs", "/docs", "Swagger UI: try every operation in the browser"),
    ("redoc", "/redoc", "ReDoc: the API reference"),
    ("openapi", "/openapi.json", "the OpenAPI document"),
    ("info", "/v1/info", "version, devices and limits (with the API key, when the server has one)"),
)


def entry_points(request: Request) -> list[tuple[str, str, str]]:
    """ENTRY_POINTS with each path under the app's root path (a proxy's prefix)."""
    root = request.scope.get("root_path", "").rstrip("/")
    return [(name, root + path, about) for name, path, about in ENTRY_POINTS]


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


@cache
def _playground_page(api_key_required: bool) -> bytes:
    page = (PLAYGROUND / "index.html").read_text(encoding="utf-8")
    return page.replace("{{API_KEY}}", "required" if api_key_required else "none").encode()


def playground_assets() -> StaticFiles:
    """The page's scripts and styles, for ``app.mount(ASSETS_PATH, ...)``."""
    return StaticFiles(directory=PLAYGROUND)


@router.api_route("/", methods=["GET", "HEAD"])
async def open_playground(request: Request, settings: AppSettings) -> Response:
    """The playground page (or, when JSON is asked for, the entry points)."""
    links = entry_points(request)
    urls = {name: url for name, url, _ in links}
    link = f'<{urls["docs"]}>; rel="service-doc", <{urls["openapi"]}>; rel="service-desc"'
    headers = {"Vary": "Accept", "Link": link}
    if _wants_json(request):
        return Response(codec.dumps({"name": "gradserve", "docs": urls["docs"], "links": urls}),
                        media_type="application/json", headers=headers)
    # HEAD gets the same headers; the server (uvicorn, as HTTP requires) sends no body with them.
    page = _playground_page(settings.api_key is not None)
    headers.update({"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-cache"})
    return Response(page, media_type="text/html; charset=utf-8", headers=headers)
