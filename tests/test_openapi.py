"""/openapi.json, /docs and /redoc: a valid OpenAPI 3.1 document in step with the mounted routes,
built from the pydantic models, and docs pages whose assets are all served by this server."""
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import jsonschema
import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.versions import consts as spec_versions
from openapi_spec_validator.versions.shortcuts import get_spec_version

from fooocus_toy import attach_toy_fooocus
from server.comfy_routes import ComfyRoutes
from server.frontend_routes import FrontendRoutes
from server.fooocus.advanced import AdvancedParams
from server.fooocus.docs import ApiDocs, find_redoc, find_swagger_ui
from server.fooocus.openapi import OPERATIONS, build_document, fooocus_routes, undocumented_routes
from server.fooocus.requests import CommonRequest, JobHistoryRequest
from server.fooocus.responses import AsyncJobResponse


async def make_client(aiohttp_client, toy_app_factory, **config):
    app = toy_app_factory(**config)
    api = attach_toy_fooocus(app)
    web_app = app.make_web_app()
    return await aiohttp_client(web_app), app, api, web_app


async def get_document(client, **headers):
    response = await client.get("/openapi.json", headers=headers)
    assert response.status == 200 and response.content_type == "application/json"
    return await response.json()


def operation_keys(document):
    return {(method.upper(), path) for path, item in document["paths"].items() for method in item}


def resolve(document, schema):
    """Follow one local $ref."""
    ref = schema.get("$ref")
    if ref is None:
        return schema
    node = document
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def validator_for(document, schema):
    """A JSON-schema validator for `schema` whose $refs resolve inside the document."""
    root = {**schema, "components": document["components"]}
    return jsonschema.Draft202012Validator(root)


# --- the document --------------------------------------------------------------------------------
async def test_document_is_valid_openapi_3_1(aiohttp_client, toy_app_factory):
    client, *_ = await make_client(aiohttp_client, toy_app_factory)
    document = await get_document(client)
    assert document["openapi"] == "3.1.0"
    assert get_spec_version(document) == spec_versions.OPENAPIV31
    validate(document)  # raises on any violation of the 3.1 meta-schema
    assert len({op["operationId"] for item in document["paths"].values() for op in item.values()}) == \
        len(operation_keys(document))


async def test_document_lists_exactly_the_fooocus_routes(aiohttp_client, toy_app_factory):
    client, app, api, web_app = await make_client(aiohttp_client, toy_app_factory)
    document = await get_document(client)
    comfy = {(method, path) for method, path, _ in ComfyRoutes(app).routes()}
    comfy |= {(method, "/api" + path) for method, path in comfy} | {("GET", "/api/ping")}
    docs = {(method, path) for method, path, _ in ApiDocs(dict, None, None).routes()}
    frontend = FrontendRoutes(app)  # the web UI's routes (ComfyUI's frontend): not Fooocus routes
    ui = {(method, path) for method, path, _ in frontend.routes()}
    ui |= {(method, "/api" + path) for method, path in ui}
    ui |= {(method, path) for method, path, _ in frontend.internal_routes() + frontend.page_routes()}
    ui.add(("GET", ""))  # the frontend's static files (a resource whose prefix "/" reads as "")
    docs |= ui - {("GET", "/")}
    mounted = {(route.method, route.resource.canonical) for route in web_app.router.routes()
               if route.method not in ("HEAD", "OPTIONS")}
    assert operation_keys(document) == mounted - comfy - docs
    # every mounted route is described by the table, not by the bare fallback
    assert undocumented_routes((m, p) for m, p, _ in fooocus_routes(api)) == []
    assert ("POST", "/v1/generation/cancel") in operation_keys(document)
    # generation routes that are not mounted yet are not advertised
    assert not any(path.startswith("/v2/") or "image-prompt" in path for _, path in operation_keys(document))


def test_unknown_route_gets_a_bare_entry_and_is_reported():
    async def teleport(request):
        """Teleport the queue.

        Not described in OPERATIONS."""

    routes = [("GET", "/v1/generation/job-queue", None), ("POST", "/v9/teleport", teleport)]
    document = build_document(routes)
    assert set(document["paths"]) == {"/v1/generation/job-queue", "/v9/teleport"}
    assert document["paths"]["/v9/teleport"]["post"]["summary"] == "Teleport the queue."
    assert undocumented_routes((m, p) for m, p, _ in routes) == [("POST", "/v9/teleport")]
    validate(document)


async def test_request_body_comes_from_the_request_model(aiohttp_client, toy_app_factory):
    client, *_ = await make_client(aiohttp_client, toy_app_factory)
    document = await get_document(client)
    body = document["paths"]["/v1/generation/text-to-image"]["post"]["requestBody"]["content"]["application/json"]
    model = resolve(document, body["schema"])
    assert set(model["properties"]) == set(CommonRequest.model_fields)
    assert model["properties"]["image_number"]["maximum"] == 32
    performance = resolve(document, model["properties"]["performance_selection"])
    assert performance["enum"] == ["Speed", "Quality", "Extreme Speed", "Lightning", "Hyper-SD"]
    advanced = resolve(document, model["properties"]["advanced_params"])
    assert set(advanced["properties"]) == set(AdvancedParams.model_fields)
    # a real default request validates against the documented body schema, a bad one does not
    validator = validator_for(document, body["schema"])
    validator.validate(CommonRequest().model_dump(mode="json"))
    assert not validator.is_valid({"image_number": 33})
    assert not validator.is_valid({"performance_selection": "Fast"})


async def test_query_parameters_come_from_the_query_models(aiohttp_client, toy_app_factory):
    client, *_ = await make_client(aiohttp_client, toy_app_factory)
    document = await get_document(client)
    query_job = {p["name"]: p for p in document["paths"]["/v1/generation/query-job"]["get"]["parameters"]}
    assert query_job["job_id"]["required"] is True and query_job["job_id"]["in"] == "query"
    assert query_job["require_step_preview"]["schema"]["type"] == "boolean"
    assert query_job["require_step_preivew"]["deprecated"] is True  # the old typo still works
    history = {p["name"]: p for p in document["paths"]["/v1/generation/job-history"]["get"]["parameters"]}
    assert set(history) == set(JobHistoryRequest.model_fields)
    assert history["page"]["schema"]["minimum"] == 0 and history["page"]["schema"]["default"] == 0
    assert history["page_size"]["schema"]["minimum"] == 1
    assert history["job_id"]["schema"] == {"type": "string", "title": "Job Id"}  # no null on the wire
    cancel = document["paths"]["/v1/generation/cancel"]["post"]["parameters"]
    assert [(p["name"], p["in"], p["required"]) for p in cancel] == [("job_id", "query", True)]
    files = document["paths"]["/files/{date}/{file_name}"]["get"]["parameters"]
    assert [(p["name"], p["in"], p["required"]) for p in files] == [("date", "path", True),
                                                                    ("file_name", "path", True)]


async def test_responses_match_what_the_server_answers(aiohttp_client, toy_app_factory):
    client, *_ = await make_client(aiohttp_client, toy_app_factory)
    document = await get_document(client)

    def schema_of(path, method, status, media="application/json"):
        return document["paths"][path][method]["responses"][status]["content"][media]["schema"]

    query_job = schema_of("/v1/generation/query-job", "get", "200")
    assert resolve(document, query_job)["properties"].keys() == AsyncJobResponse.model_fields.keys()
    submitted = await (await client.post("/v1/generation/text-to-image", json={"async_process": True})).json()
    validator_for(document, query_job).validate(submitted)
    missing = await client.get("/v1/generation/query-job", params={"job_id": "nope"})
    assert missing.status == 404
    validator_for(document, schema_of("/v1/generation/query-job", "get", "404")).validate(await missing.json())
    invalid = await client.post("/v1/generation/text-to-image", json={"image_number": 0})
    assert invalid.status == 422
    validator_for(document, schema_of("/v1/generation/text-to-image", "post", "422")).validate(await invalid.json())
    no_id = await client.get("/v1/generation/query-job")
    validator_for(document, schema_of("/v1/generation/query-job", "get", "422")).validate(await no_id.json())
    for path in ("/v1/generation/job-queue", "/v1/engines/all-models", "/v1/engines/styles", "/ping",
                 "/v1/generation/job-history", "/v1/engines/clean_vram"):
        answer = await client.get(path)
        validator_for(document, schema_of(path, "get", "200")).validate(await answer.json())
    assert "image/png" in document["paths"]["/v1/generation/text-to-image"]["post"]["responses"]["200"]["content"]


async def test_api_key_scheme(aiohttp_client, toy_app_factory):
    client, *_ = await make_client(aiohttp_client, toy_app_factory)
    open_document = await get_document(client)
    scheme = open_document["components"]["securitySchemes"]["APIKeyHeader"]
    assert scheme == {"type": "apiKey", "in": "header", "name": "X-API-KEY"}
    assert not any("security" in op for item in open_document["paths"].values() for op in item.values())

    client, *_ = await make_client(aiohttp_client, toy_app_factory, apikey="s3cret")
    document = await get_document(client)  # the docs stay public, as upstream
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if path.startswith("/files/"):
                assert "security" not in operation and "403" not in operation["responses"]
            else:
                assert operation["security"] == [{"APIKeyHeader": []}], (method, path)
                assert "403" in operation["responses"]
    assert (await client.get("/ping")).status == 403
    assert (await client.get("/ping", headers={"X-API-KEY": "s3cret"})).status == 200
    validate(document)


def test_every_table_entry_builds():
    """Entries for routes not mounted today still produce a valid document."""
    document = build_document([(method, path, None) for method, path in OPERATIONS], apikey_required=True)
    validate(document)
    assert operation_keys(document) == set(OPERATIONS)


# --- the docs pages ------------------------------------------------------------------------------
class AssetLinks(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href", "spec-url") and value:
                self.links.append(value)


EXPECTED_TYPES = {".js": {"text/javascript", "application/javascript"}, ".css": {"text/css"},
                  ".png": {"image/png"}, ".json": {"application/json"}}


@pytest.mark.parametrize("page, marker", [("/docs", "SwaggerUIBundle"), ("/redoc", "Redoc"),
                                          ("/docs/oauth2-redirect", "swaggerUIRedirectOauth2")])
async def test_docs_pages_use_only_local_assets(aiohttp_client, toy_app_factory, page, marker):
    assert find_swagger_ui() is not None and find_redoc() is not None, "docs asset packages not installed"
    client, *_ = await make_client(aiohttp_client, toy_app_factory, apikey="s3cret")  # docs need no key
    response = await client.get(page)
    assert response.status == 200 and response.content_type == "text/html"
    html = await response.text()
    assert "http://" not in html and "https://" not in html  # no CDN, no external fonts
    parser = AssetLinks()
    parser.feed(html)
    assert parser.links
    page_url = f"http://127.0.0.1{page}"
    scripts = []
    for link in parser.links:
        assert not urlsplit(link).scheme and not urlsplit(link).netloc, link
        target = urlsplit(urljoin(page_url, link)).path
        asset = await client.get(target)
        assert asset.status == 200, target
        suffix = target[target.rfind("."):]
        assert asset.content_type in EXPECTED_TYPES[suffix], (target, asset.content_type)
        if suffix == ".js":
            scripts.append(await asset.text())
    assert any(marker in script for script in scripts)


async def test_swagger_page_points_at_the_document(aiohttp_client, toy_app_factory):
    client, *_ = await make_client(aiohttp_client, toy_app_factory)
    html = await (await client.get("/docs")).text()
    assert '"openapi.json"' in html and "validatorUrl: null" in html and "docs/oauth2-redirect" in html
    redoc = await (await client.get("/redoc")).text()
    assert 'spec-url="openapi.json"' in redoc
    bundle = await client.get("/docs/static/swagger-ui-bundle.js")
    assert int(bundle.headers["Content-Length"]) > 500_000  # the real bundle, not a stub


@pytest.mark.parametrize("path", ["/docs/static/swagger-ui-bundle.js.map", "/docs/static/index.j2",
                                  "/docs/static/..%2F__init__.py", "/redoc/static/redoc.standalone.js.map",
                                  "/redoc/static/swagger-ui.css"])
async def test_only_listed_assets_are_served(aiohttp_client, toy_app_factory, path):
    client, *_ = await make_client(aiohttp_client, toy_app_factory)
    assert (await client.get(path)).status == 404


async def test_missing_asset_packages_give_503_not_500(aiohttp_client):
    from aiohttp import web

    docs = ApiDocs(lambda: {"openapi": "3.1.0"}, None, None)
    web_app = web.Application()
    for method, path, handler in docs.routes():
        web_app.router.add_route(method, path, handler)
    client = await aiohttp_client(web_app)
    for page, package in (("/docs", "swagger-ui-bundle-v2"), ("/redoc", "drf-spectacular-sidecar")):
        response = await client.get(page)
        assert response.status == 503 and package in await response.text()
    assert (await client.get("/docs/static/swagger-ui.css")).status == 404
    assert (await client.get("/openapi.json")).status == 200
