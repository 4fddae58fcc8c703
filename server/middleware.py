"""HTTP middlewares: API key, CORS, and errors as JSON."""
from __future__ import annotations

import hmac
import logging

from aiohttp import web

log = logging.getLogger(__name__)

PUBLIC_PREFIXES = ("/files/", "/docs", "/redoc", "/openapi.json")


def api_key_middleware(apikey: str):
    """`--apikey`: every route except /files and the docs needs `X-API-KEY` (403 Forbidden)."""

    @web.middleware
    async def check(request: web.Request, handler):
        if request.method == "OPTIONS" or request.path.startswith(PUBLIC_PREFIXES):
            return await handler(request)
        given = request.headers.get("X-API-KEY", "")
        if not hmac.compare_digest(given.encode(), apikey.encode()):
            return web.json_response({"detail": "Forbidden"}, status=403)
        return await handler(request)

    return check


@web.middleware
async def cors_middleware(request: web.Request, handler):
    """Permissive CORS as Fooocus-API configures it (any origin, method and header, credentials)."""
    origin = request.headers.get("Origin")
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        response = web.Response(status=200)
        response.headers["Access-Control-Allow-Methods"] = "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"
        response.headers["Access-Control-Allow-Headers"] = request.headers.get("Access-Control-Request-Headers", "*")
        response.headers["Access-Control-Max-Age"] = "600"
    else:
        response = await handler(request)
    if origin:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Vary"] = "Origin"
    return response


@web.middleware
async def error_middleware(request: web.Request, handler):
    """Known errors keep their status; an unexpected one is logged and answered as JSON, not HTML."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return web.json_response({"error": {"type": "internal_error", "message": str(exc)}}, status=500)
