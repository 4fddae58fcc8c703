"""Fuzz every route of /openapi.json with schemathesis against a real server: no input may give a 500.

The App runs on a 127.0.0.1 port in a background thread (aiohttp is neither ASGI nor WSGI) with
the Fooocus API over torch-free toy workflows whose jobs finish in milliseconds. Generation is
derandomized and bounded (a few dozen cases per operation and mode, no shrinking) so CI is stable.
Hand-written bad inputs (malformed JSON, wrong types, huge numbers, unknown enum values,
negative pages) are checked one by one below.
"""
import asyncio
import json
import shutil
import socket
import threading
import time

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from fooocus_toy import ToySave
from graph import validate_prompt
from server.app import App
from server.config import AppConfig
from server.fooocus.api import FooocusAPI
from server.fooocus.jobs import JobPlan
from server.fooocus.validation import Vocabulary
from server.queue import RunSpec

EXAMPLES_PER_OPERATION = 25
# A valid size for positive cases: the models accept only W*H on the latent grid, which a JSON
# schema cannot say, so most generated strings would stop at 422 before reaching the job system.
VALID_SIZE = "64*64"
# Besides "no 500": every answer is documented (status, media type, body schema).
CONFORMANCE_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
                      response_schema_conformance]


def fast_planner(registry):
    """One tiny run per image: a number saved as an 8x8 PNG (no sampling delay)."""

    def plan(job_type, params, job_id):
        runs, seeds = [], []
        for index in range(params.get("image_number", 1)):
            prompt = {"n": {"class_type": "Number", "inputs": {"value": index}},
                      "save": {"class_type": "ToySave", "inputs": {"value": ["n", 0], "job_id": job_id,
                                                                   "index": index}}}
            checked = validate_prompt(prompt, registry)
            assert checked.ok, checked.node_errors
            runs.append(RunSpec(prompt, checked.outputs, checked.constants, checked.links))
            seeds.append(index)
        return JobPlan(runs, seeds, 1)

    return plan


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    from toy_nodes import NODE_CLASS_MAPPINGS

    root = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    app = App(AppConfig(port=port, models_dir=root / "models", output_dir=root / "out", input_dir=root / "in",
                        temp_dir=root / "tmp", custom_nodes_dir=None),
              register_nodes=lambda r: r.register_mappings(NODE_CLASS_MAPPINGS, builtin=True))
    app.registry.register("ToySave", ToySave)
    # Fuzzed webhook URLs point nowhere: one quick attempt each.
    api = FooocusAPI(app, fast_planner(app.registry), vocabulary=lambda: Vocabulary.of(),
                     style_names=lambda: ["Fooocus V2", "Fooocus Enhance"],
                     webhook_options={"max_attempts": 1, "timeout_s": 0.5})
    app.services.extras["fooocus_outputs"] = api.outputs
    app.extensions.append(api)
    ready, state = threading.Event(), {}

    def serve():
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(app.make_web_app())
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        state["loop"] = loop
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(30)
    yield f"http://127.0.0.1:{port}"
    state["loop"].call_soon_threadsafe(state["loop"].stop)
    thread.join(30)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def session():
    with requests.Session() as s:
        yield s


def _operations(base_url):
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=SchemathesisConfig())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    return operations


def _takes_input(operation) -> bool:
    return bool(list(operation.iter_parameters())) or (operation.body is not None and len(operation.body) > 0)


def _fuzz(operation, mode, base_url, session) -> tuple[list[str], dict[int, int]]:
    """Run one operation's cases: (a description of each failure, how often each status came)."""
    failures, statuses = [], {}

    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case):
        if mode is GenerationMode.POSITIVE and isinstance(case.body, dict) and "aspect_ratios_selection" in case.body:
            case.body["aspect_ratios_selection"] = VALID_SIZE
        response = case.call(base_url=base_url, session=session, timeout=30)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        if response.status_code >= 500:
            failures.append(f"{response.status_code} {response.text[:300]!r}\n  {case.as_curl_command()}")
            return
        try:
            case.validate_response(response, checks=CONFORMANCE_CHECKS)
        except (Failure, FailureGroup) as exc:  # one failed check, or several grouped
            failures.append(f"does not match the document: {str(exc)[:1500]}\n  {case.as_curl_command()}")

    try:
        run()
    except Unsatisfiable:
        # Negative data for a parameter that accepts any string (a job id, a path segment) does
        # not exist; the other parameters of that operation are still fuzzed when they exist.
        if mode is GenerationMode.POSITIVE:
            raise
        print(f"no negative cases for {operation.label}")
    return failures, statuses


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_no_route_answers_500(base_url, session, mode):
    failures, seen = [], {}
    for operation in _operations(base_url):
        if mode is GenerationMode.NEGATIVE and not _takes_input(operation):
            continue
        found, seen[operation.label] = _fuzz(operation, mode, base_url, session)
        failures += [f"{operation.label}: {failure}" for failure in found]
    assert not failures, "\n".join(failures)
    # the run reached the job system, and bad input was turned away at the edge
    generated = seen["POST /v1/generation/text-to-image"]
    if mode is GenerationMode.POSITIVE:
        assert generated.get(200, 0) > EXAMPLES_PER_OPERATION // 2, generated
    else:
        assert generated.get(422, 0) > EXAMPLES_PER_OPERATION // 2, generated


def test_answers_about_a_real_job_match_the_document(base_url, session):
    """Random ids only reach the 404s; a real job covers the success shapes of the id routes."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=SchemathesisConfig())

    def call(path, method, **parts):
        case = schema[path][method].Case(**parts)
        return case.call_and_validate(base_url=base_url, session=session, checks=CONFORMANCE_CHECKS, timeout=30)

    images = call("/v1/generation/text-to-image", "POST", body={"image_number": 2, "require_base64": True}).json()
    assert [image["finish_reason"] for image in images] == ["SUCCESS", "SUCCESS"]
    submitted = call("/v1/generation/text-to-image", "POST", body={"async_process": True}).json()
    job_id = submitted["job_id"]
    deadline = time.monotonic() + 120  # a generous deadline, not a guess at the machine's speed
    while time.monotonic() < deadline:
        answer = call("/v1/generation/query-job", "GET", query={"job_id": job_id, "require_step_preview": True}).json()
        if answer["job_stage"] == "SUCCESS":
            break
        time.sleep(0.01)
    assert answer["job_stage"] == "SUCCESS"
    day, name = answer["job_result"][0]["url"].split("/files/", 1)[1].split("/")
    assert call("/files/{date}/{file_name}", "GET", path_parameters={"date": day, "file_name": name}).status_code == 200
    assert call("/v1/generation/cancel", "POST", query={"job_id": job_id}).json()["job_stage"] == "SUCCESS"
    history = call("/v1/generation/job-history", "GET", query={"job_id": job_id}).json()["history"]
    assert [item["job_id"] for item in history] == [job_id]
    png = call("/v1/generation/text-to-image", "POST", query={"accept": "image/png"}, body={})
    assert png.headers["content-type"] == ["image/png"] and png.content[:4] == b"\x89PNG"
    assert call("/v1/generation/job-history", "GET", query={"job_id": job_id, "delete": True}).json() == \
        {"message": "Deleted"}


# --- hand-written bad input ----------------------------------------------------------------------
T2I = "/v1/generation/text-to-image"


def _post(session, base_url, path, data, **kwargs):
    return session.post(base_url + path, data=data, timeout=30, **kwargs)


@pytest.mark.parametrize("raw", [b"{", b"{'prompt': 1}", b"\xff\xfe\x00", b"[1, 2", b"NaN", b"nul", b'{"a":1}}'])
def test_malformed_json_is_422(base_url, session, raw):
    response = _post(session, base_url, T2I, raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] in ("json_invalid", "model_type", "finite_number")


@pytest.mark.parametrize("body", [
    [], "prompt", 3, None,
    {"prompt": ["a"]}, {"image_number": "many"}, {"loras": {"a": 1}}, {"advanced_params": [1]},
    {"style_selections": 5}, {"image_seed": 1.5}, {"async_process": "maybe"},
    {"image_number": 10 ** 40}, {"guidance_scale": 1e308}, {"sharpness": -1e308},
    {"advanced_params": {"overwrite_step": 10 ** 30}}, {"loras": [{"model_name": "x", "weight": 1e300}]},
    {"performance_selection": "Fast"}, {"save_extension": "bmp"}, {"meta_scheme": "exif"},
    {"advanced_params": {"refiner_swap_method": "sideways"}}, {"advanced_params": {"inpaint_engine": "v9"}},
    {"aspect_ratios_selection": "99999999999999999999*8"}, {"aspect_ratios_selection": "a*b"},
])
def test_wrong_bodies_are_422(base_url, session, body):
    response = _post(session, base_url, T2I, json.dumps(body))
    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], list)


def test_huge_seed_is_accepted_and_echoed(base_url, session):
    seed = 10 ** 30  # outside [0, 2**63-1]: the reference server picks a random seed instead
    response = _post(session, base_url, T2I, json.dumps({"image_seed": seed, "async_process": True}))
    assert response.status_code == 200 and response.json()["job_stage"] in ("WAITING", "RUNNING", "SUCCESS")


@pytest.mark.parametrize("query", [
    {"page": "-1"}, {"page_size": "0"}, {"page_size": "-5"}, {"page": "x"}, {"page_size": "1e3"},
    {"delete": "perhaps"}, {"delete": "true"},
])
def test_bad_history_queries_are_422(base_url, session, query):
    response = session.get(base_url + "/v1/generation/job-history", params=query, timeout=30)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("query", [{"page": str(10 ** 30)}, {"page": str(2 ** 63)},
                                   {"page": str(2 ** 62), "page_size": "1000"}])
def test_huge_history_pages_are_empty(base_url, session, query):
    response = session.get(base_url + "/v1/generation/job-history", params=query, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["history"] == []


@pytest.mark.parametrize("path, params", [
    ("/v1/generation/query-job", {}),
    ("/v1/generation/query-job", {"job_id": "x", "require_step_preview": "sometimes"}),
])
def test_bad_query_job_is_422(base_url, session, path, params):
    assert session.get(base_url + path, params=params, timeout=30).status_code == 422


@pytest.mark.parametrize("job_id", ["nope", "\u00e9\u4e2d", "x" * 5000, "%00"])
def test_unknown_jobs_are_404(base_url, session, job_id):
    assert session.get(base_url + "/v1/generation/query-job", params={"job_id": job_id}, timeout=30).status_code == 404
    assert session.post(base_url + "/v1/generation/cancel", params={"job_id": job_id}, timeout=30).status_code == 404


@pytest.mark.parametrize("body", [b"{", b"[]", b'"id"', b'{"job_id": null}', b'{"job_id": 5}'])
def test_cancel_with_odd_bodies_never_500(base_url, session, body):
    response = session.post(base_url + "/v1/generation/cancel", data=body, timeout=30)
    assert response.status_code in (404, 422), response.text


@pytest.mark.parametrize("path", ["/files/2024-01-01/a%00.png", "/files/9999-99-99/x.png", "/files/..%2F../x.png",
                                  "/files/2024-01-01/" + "a" * 5000 + ".png",  # longer than a file name may be
                                  "/view?filename=" + "a" * 5000 + ".png",  # the ComfyUI file route too
                                  "/view?filename=x.png&subfolder=" + "a" * 5000])
def test_odd_file_paths_are_404(base_url, session, path):
    assert session.get(base_url + path, timeout=30).status_code == 404
