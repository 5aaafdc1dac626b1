"""The ``/ui`` page: a static HTML + JS + CSS client of the public API, served by the API itself.

No build step, no CDN, no framework: three files shipped as package data and served from memory. The page
is public (it holds no secret); its API calls carry the key the user pastes. A strict Content-Security-Policy
lets it load nothing but its own files, talk to nothing but this origin, and show images from this origin,
``blob:``/``data:`` (uploads, fetched sources) and ``https:`` (an https source shown directly).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

from fastapi import APIRouter, Request, Response

from api.errors import not_found

router = APIRouter(tags=["ui"], include_in_schema=False)

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data: https:; connect-src 'self'; script-src 'self'; "
    "style-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

# The only files served: a fixed table, so no request path ever reaches the file system.
ASSETS: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


@cache
def load_asset(name: str) -> Asset:
    """One of the page's files, read once from the installed package."""
    body = (files("api") / "ui" / name).read_bytes()
    return Asset(body, ASSETS[name], '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def asset_response(request: Request, name: str) -> Response:
    asset = load_asset(name)
    # Revalidated on every load (no-cache), so an upgraded service never runs a stale script with new
    # HTML; the ETag keeps that revalidation to a 304.
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache", "ETag": asset.etag}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


@router.api_route("/ui", methods=["GET", "HEAD"])
@router.api_route("/ui/", methods=["GET", "HEAD"])
async def page(request: Request) -> Response:
    return asset_response(request, "index.html")


@router.api_route("/ui/{name}", methods=["GET", "HEAD"])
async def asset(name: str, request: Request) -> Response:
    if name not in ASSETS:
        raise not_found("file", f"The page has no file {name[:64]!r}.")
    return asset_response(request, name)
