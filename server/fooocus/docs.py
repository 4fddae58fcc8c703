"""`/openapi.json`, Swagger UI at `/docs` and ReDoc at `/redoc`, served offline.

The UI assets come from installed Python packages, never from a CDN, so the docs work on an
air-gapped machine:
- Swagger UI 5 (needed for OpenAPI 3.1) from `swagger-ui-bundle-v2` (import name `swagger_ui_bundle`);
- ReDoc's `redoc.standalone.js` from `drf-spectacular-sidecar`. Only its files are read: the
  package is located with `find_spec`, which does not run its `__init__` (that imports Django).
A missing package turns its page into a 503 that says what to install; the rest keeps working.

Pages use relative URLs so they also work behind a reverse proxy that adds a path prefix.
"""
from __future__ import annotations

import importlib.util
import logging
import re
from pathlib import Path
from typing import Callable, Optional

from aiohttp import web

from .openapi import document_for

log = logging.getLogger(__name__)

SWAGGER_PACKAGE = "swagger_ui_bundle"  # PyPI: swagger-ui-bundle-v2
REDOC_PACKAGE = "drf_spectacular_sidecar"  # PyPI: drf-spectacular-sidecar
MIN_SWAGGER_MAJOR = 5  # the first Swagger UI that renders OpenAPI 3.1

SWAGGER_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png", "oauth2-redirect.js")
REDOC_FILES = ("redoc.standalone.js",)

CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}

SWAGGER_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Fooocus API - Swagger UI</title>
<link rel="stylesheet" type="text/css" href="docs/static/swagger-ui.css">
<link rel="icon" type="image/png" href="docs/static/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/static/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({
  url: new URL("openapi.json", document.baseURI).href,
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  validatorUrl: null,
  oauth2RedirectUrl: new URL("docs/oauth2-redirect", document.baseURI).href,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset]
});
</script>
</body>
</html>
"""

OAUTH2_REDIRECT_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Swagger UI: OAuth2 Redirect</title></head>
<body>
<script src="static/oauth2-redirect.js"></script>
</body>
</html>
"""

REDOC_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Fooocus API - ReDoc</title>
<link rel="icon" type="image/png" href="docs/static/favicon-32x32.png">
<style>body { margin: 0; padding: 0; }</style>
</head>
<body>
<noscript>ReDoc needs JavaScript.</noscript>
<redoc spec-url="openapi.json"></redoc>
<script src="redoc/static/redoc.standalone.js"></script>
</body>
</html>
"""


def _package_dir(name: str) -> Optional[Path]:
    """Where an installed package lives, without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _version_key(folder: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", folder.name.rsplit("-", 1)[-1]))


def find_swagger_ui() -> Optional[Path]:
    """The newest bundled Swagger UI folder (vendor/swagger-ui-X.Y.Z), if it is 5 or later."""
    package = _package_dir(SWAGGER_PACKAGE)
    if package is None:
        return None
    folders = sorted((package / "vendor").glob("swagger-ui-*"), key=_version_key)
    if not folders or _version_key(folders[-1])[:1] < (MIN_SWAGGER_MAJOR,):
        return None
    return folders[-1]


def find_redoc() -> Optional[Path]:
    """The folder holding redoc.standalone.js."""
    package = _package_dir(REDOC_PACKAGE)
    if package is None:
        return None
    folder = package / "static" / REDOC_PACKAGE / "redoc" / "bundles"
    return folder if (folder / REDOC_FILES[0]).is_file() else None


class ApiDocs:
    """The docs routes; the document is built on first request and kept (routes do not change)."""

    def __init__(self, document: Callable[[], dict], swagger_dir: Optional[Path], redoc_dir: Optional[Path]) -> None:
        self._make_document = document
        self._document: Optional[dict] = None
        self.swagger_dir = swagger_dir
        self.redoc_dir = redoc_dir

    def routes(self) -> list[tuple[str, str, Callable]]:
        return [
            ("GET", "/openapi.json", self.openapi),
            ("GET", "/docs", self.swagger),
            ("GET", "/docs/oauth2-redirect", self.oauth2_redirect),
            ("GET", "/docs/static/{name}", self.swagger_asset),
            ("GET", "/redoc", self.redoc),
            ("GET", "/redoc/static/{name}", self.redoc_asset),
        ]

    def document(self) -> dict:
        if self._document is None:
            self._document = self._make_document()
        return self._document

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(self.document())

    async def swagger(self, request: web.Request) -> web.Response:
        if self.swagger_dir is None:
            return _missing("Swagger UI", "swagger-ui-bundle-v2")
        return web.Response(text=SWAGGER_PAGE, content_type="text/html")

    async def oauth2_redirect(self, request: web.Request) -> web.Response:
        if self.swagger_dir is None:
            return _missing("Swagger UI", "swagger-ui-bundle-v2")
        return web.Response(text=OAUTH2_REDIRECT_PAGE, content_type="text/html")

    async def redoc(self, request: web.Request) -> web.Response:
        if self.redoc_dir is None:
            return _missing("ReDoc", "drf-spectacular-sidecar")
        return web.Response(text=REDOC_PAGE, content_type="text/html")

    async def swagger_asset(self, request: web.Request) -> web.StreamResponse:
        return _asset(self.swagger_dir, SWAGGER_FILES, request.match_info["name"])

    async def redoc_asset(self, request: web.Request) -> web.StreamResponse:
        return _asset(self.redoc_dir, REDOC_FILES, request.match_info["name"])


def _missing(what: str, package: str) -> web.Response:
    return web.Response(status=503, text=f"{what} is not installed on this server (pip install {package}).",
                        content_type="text/plain")


def _asset(folder: Optional[Path], allowed: tuple[str, ...], name: str) -> web.StreamResponse:
    # Only the named files are served: the folder also holds source maps and templates.
    if folder is None or name not in allowed or not (folder / name).is_file():
        raise web.HTTPNotFound(text="no such asset")
    path = folder / name
    return web.FileResponse(path, headers={"Content-Type": CONTENT_TYPES[path.suffix]})


def install_docs(web_app: web.Application, api) -> ApiDocs:
    """Mount the docs of a FooocusAPI (called from FooocusAPI.install)."""
    swagger_dir, redoc_dir = find_swagger_ui(), find_redoc()
    if swagger_dir is None:
        log.warning("Swagger UI 5 assets not found: /docs is unavailable (pip install swagger-ui-bundle-v2)")
    if redoc_dir is None:
        log.warning("ReDoc assets not found: /redoc is unavailable (pip install drf-spectacular-sidecar)")
    docs = ApiDocs(lambda: document_for(api), swagger_dir, redoc_dir)
    for method, path, handler in docs.routes():
        web_app.router.add_route(method, path, handler)
    return docs
