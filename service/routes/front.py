"""``/``: the front door. Whoever opens the server's address lands on the docs page.

``GET`` and ``HEAD /`` answer ``307 Temporary Redirect`` to ``/docs`` (temporary: the playground
will take ``/`` over, and a browser must not remember a permanent redirect). The body lists the
entry points for a client that does not follow redirects: a small HTML page, or JSON when the
client asks for ``application/json`` and not HTML. The same links go in an RFC 8631 ``Link``
header (``service-doc``, ``service-desc``). The route is open without the API key, like the docs,
and is not an API operation, so it stays out of the OpenAPI document.
"""

from __future__ import annotations

import html

from fastapi import APIRouter, Request
from starlette.responses import Response

from service import codec

router = APIRouter(include_in_schema=False)


# (name, path, what it is). The docs paths are FastAPIOffline's defaults, which create_app keeps
# (it hides them from app.docs_url and app.redoc_url, so they cannot be read back from the app).
ENTRY_POINTS = (
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


def _html_page(links: list[tuple[str, str, str]], target: str) -> str:
    items = "\n".join(f'<li><a href="{html.escape(url)}">{html.escape(url)}</a>: {html.escape(about)}</li>'
                      for _, url, about in links)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>gradserve</title></head>\n'
        f'<body><h1>gradserve</h1><p>Gradients over HTTP. The docs are at <a href="{html.escape(target)}">'
        f"{html.escape(target)}</a>.</p>\n<ul>\n{items}\n</ul></body></html>\n"
    )


@router.api_route("/", methods=["GET", "HEAD"])
async def open_front_door(request: Request) -> Response:
    """307 to the docs page; the body lists the entry points (HTML, or JSON when asked for)."""
    links = entry_points(request)
    urls = {name: url for name, url, _ in links}
    target = urls["docs"]
    if _wants_json(request):
        content, media_type = codec.dumps({"name": "gradserve", "docs": target, "links": urls}), "application/json"
    else:
        content, media_type = _html_page(links, target), "text/html; charset=utf-8"
    # HEAD gets the same headers; the server (uvicorn, as HTTP requires) sends no body with them.
    return Response(content, status_code=307, media_type=media_type, headers={
        "Location": target, "Vary": "Accept",
        "Link": f'<{target}>; rel="service-doc", <{urls["openapi"]}>; rel="service-desc"'})
