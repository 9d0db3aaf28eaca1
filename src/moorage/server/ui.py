"""The web dashboard: static files shipped inside the package (`moorage/ui/`), served as is.

    GET /                  → 302 /ui/
    GET /ui/               index.html (no-cache: it names the modules to load)
    GET /ui/static/...     CSS, JS modules, the vendored uPlot (ETag / Last-Modified)

The pages are plain HTML and JavaScript modules with no build step; they read everything from
the `/v1` API in the browser, with the token the user enters (`X-Moorage-Token`), so these
routes carry no data and anyone may fetch them (OPEN).
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from .routes import OPEN, RouteTable

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
# The pages build the DOM from text nodes; the policy is the second line of defence: no inline
# script, nothing loaded from elsewhere, no framing.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}

routes = RouteTable()


@routes.get("/", "The dashboard's address", auth=OPEN, tags=("ui",))
async def _root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/ui/")


@routes.get("/ui", "The dashboard's address", auth=OPEN, tags=("ui",))
async def _ui(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/ui/")


@routes.get("/ui/", "The dashboard", auth=OPEN, tags=("ui",))
async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(UI_DIR / "index.html", headers=HEADERS)


routes.static("/ui/static/", UI_DIR / "static", "The dashboard's files", auth=OPEN)
