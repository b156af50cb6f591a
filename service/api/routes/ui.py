"""The browser console (docs/api.md, "Console"): static files shipped in the package (service/ui/static), served at
/ui, its assets at /ui/assets/…, and every other /ui/… path as the page itself (deep links). No key is needed for
these: the page asks for one and calls the public API with it. Every answer carries a Content-Security-Policy that
allows no inline script and no connection outside this origin."""

from __future__ import annotations

import hashlib
from importlib.resources import files

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from service.api.problems import Problem

router = APIRouter(include_in_schema=False)

STATIC = files("service") / "ui" / "static"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def _load() -> dict[str, tuple[bytes, str, str]]:
    """Every static file by name, read once: (content, media type, ETag). A flat folder: no path ever reaches the
    file system from a request."""
    assets = {}
    for entry in STATIC.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in MEDIA_TYPES:
            content = entry.read_bytes()
            assets[entry.name] = (content, MEDIA_TYPES[suffix], f'"{hashlib.sha256(content).hexdigest()[:16]}"')
    return assets


ASSETS = _load()


def _serve(name: str, request: Request) -> Response:
    content, media_type, etag = ASSETS[name]
    # Revalidated each time (a new release changes them), answered 304 while unchanged.
    headers = {**SECURITY_HEADERS, "ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(content, media_type=media_type, headers=headers)


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/ui", status_code=307)


@router.get("/ui/assets/{asset}")
async def asset(asset: str, request: Request) -> Response:
    if asset not in ASSETS or asset == "index.html":
        raise Problem(404, "No such console asset.")
    return _serve(asset, request)


@router.get("/ui")
@router.get("/ui/{page:path}")
async def page(request: Request, page: str = "") -> Response:
    """The console itself; the script reads the path (/ui/collections/{name}, /ui/search?collection=…&q=…)."""
    if page.startswith("assets/"):  # a file that is not there (or a path beside the flat folder): not the page
        raise Problem(404, "No such console asset.")
    return _serve("index.html", request)
