"""The web UI's other routes (server/frontend_routes.py, server/jobs_view.py) in ComfyUI's shapes,
each with its bad inputs; Fooocus jobs in the jobs view and cancelled through it."""
import io
import json
import struct

import pytest
from aiohttp import FormData
from PIL import Image

from fooocus_toy import attach_toy_fooocus
from waiting import until


@pytest.fixture
async def served(aiohttp_client, toy_app_factory, tmp_path):
    app = toy_app_factory(user_dir=tmp_path / "user", max_upload_size_mb=0.05)  # 50 KB bodies at most
    attach_toy_fooocus(app)
    return await aiohttp_client(app.make_web_app()), app


def png(size=(8, 8), color=(200, 10, 10, 255)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_page_and_static_files(served):
    client, _ = served
    page = await client.get("/")
    assert page.status == 200 and page.content_type == "text/html"
    assert 'id="vue-app"' in await page.text()
    assert (await client.get("/user.css")).content_type == "text/css"
    assert (await client.get("/favicon.ico")).status == 200
    assert (await client.get("/api/userdata/user.css")).status == 200  # linked by index.html
    assert (await client.get("/no/such/file.js")).status == 404
    assert (await client.get("/..%2F..%2Fpyproject.toml")).status in (403, 404)


@pytest.mark.parametrize("path", ["/api/i18n", "/api/workflow_templates", "/api/node_replacements",
                                  "/api/global_subgraphs"])
async def test_features_that_are_off_answer_empty_maps(served, path):
    client, _ = served
    response = await client.get(path)
    assert response.status == 200 and await response.json() == {}


async def test_extensions_lists_pack_scripts(served, tmp_path):
    client, app = served
    assert await (await client.get("/api/extensions")).json() == []
    web = tmp_path / "pack_web"
    (web / "sub").mkdir(parents=True)
    (web / "a.js").write_text("")
    (web / "sub" / "b.js").write_text("")
    (web / "style.css").write_text("")
    app.web_directories["my_pack"] = web
    assert await (await client.get("/api/extensions")).json() == ["/extensions/my_pack/a.js",
                                                                "/extensions/my_pack/sub/b.js"]


async def test_templates_are_our_workflows(served):
    client, _ = served
    index = await (await client.get("/templates/index.json")).json()
    names = {t["name"] for t in index[0]["templates"]}
    assert index[0]["moduleName"] == "default" and "text_to_image" in names
    assert all(not name.endswith(".params") for name in names)
    assert await (await client.get("/templates/index.fr.json")).json() == index
    assert await (await client.get("/templates/index_logo.json")).json() == {}
    thumb = await client.get("/templates/text_to_image-1.svg")
    assert thumb.content_type == "image/svg+xml" and "text to image" in await thumb.text()
    # the toy registry lacks the Fooocus nodes: the template says which, rather than a broken graph
    missing = await client.get("/templates/text_to_image.json")
    assert missing.status == 404 and "FooocusKSampler" in (await missing.json())["error"]
    for bad in ("nothing.json", "..%2Fpyproject.toml", "text_to_image.params.json", "text_to_image-1.png"):
        assert (await client.get(f"/templates/{bad}")).status == 404, bad


async def test_experiment_models_and_folder_paths(served, tmp_path):
    client, app = served
    folders = await (await client.get("/api/experiment/models")).json()
    assert {"name": "checkpoints", "folders": [str(d) for d in app.folders.directories("checkpoints")]} in folders
    (tmp_path / "models" / "checkpoints").mkdir(parents=True)
    (tmp_path / "models" / "checkpoints" / "m.safetensors").write_bytes(b"")
    app.folders.invalidate()  # listings are cached until a folder changes; be explicit
    files = await (await client.get("/api/experiment/models/checkpoints")).json()
    assert files == [{"name": "m.safetensors", "pathIndex": 0}]
    unknown = await client.get("/api/experiment/models/..%2Fsecrets")
    assert unknown.status == 404 and "unknown model folder" in (await unknown.json())["error"]
    paths = await (await client.get("/internal/folder_paths")).json()
    assert paths["loras"] == [str(d) for d in app.folders.directories("loras")]


def safetensors(metadata: dict | None) -> bytes:
    header = {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    if metadata is not None:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + b"\0\0\0\0"


async def test_view_metadata(served, tmp_path):
    client, app = served
    loras = tmp_path / "models" / "loras"
    loras.mkdir(parents=True)
    (loras / "tagged.safetensors").write_bytes(safetensors({"ss_network_dim": "16"}))
    (loras / "plain.safetensors").write_bytes(safetensors(None))
    (loras / "broken.safetensors").write_bytes(struct.pack("<Q", 1 << 40))
    (loras / "old.pt").write_bytes(b"")
    app.folders.invalidate()  # listings are cached until a folder changes; be explicit
    ok = await client.get("/api/view_metadata/loras", params={"filename": "tagged.safetensors"})
    assert await ok.json() == {"ss_network_dim": "16"}
    no_name = await client.get("/api/view_metadata/loras")
    assert no_name.status == 400 and "filename" in (await no_name.json())["error"]
    for folder, name in (("loras", "plain.safetensors"), ("loras", "broken.safetensors"), ("loras", "old.pt"),
                         ("loras", "absent.safetensors"), ("nowhere", "tagged.safetensors"),
                         ("loras", "../loras/tagged.safetensors"), ("loras", "/etc/passwd.safetensors")):
        response = await client.get(f"/api/view_metadata/{folder}", params={"filename": name})
        assert response.status == 404, (folder, name)


async def test_upload_mask(served, tmp_path):
    client, app = served
    (tmp_path / "input").mkdir(exist_ok=True)
    (tmp_path / "input" / "photo.png").write_bytes(png((16, 12)))

    def form(mask: bytes, ref) -> FormData:
        data = FormData()
        data.add_field("image", mask, filename="clipspace-mask.png", content_type="image/png")
        data.add_field("original_ref", ref if isinstance(ref, str) else json.dumps(ref))
        data.add_field("type", "input")
        return data

    mask = png((4, 3), (0, 0, 0, 0))
    saved = await client.post("/upload/mask", data=form(mask, {"filename": "photo.png", "type": "input"}))
    assert await saved.json() == {"name": "clipspace-mask.png", "subfolder": "", "type": "input"}
    result = Image.open(tmp_path / "input" / "clipspace-mask.png")
    assert result.size == (16, 12) and result.getchannel("A").getextrema() == (0, 0)
    assert result.convert("RGB").getpixel((0, 0)) == (200, 10, 10)

    bad = [(form(mask, "not json"), 400, "original_ref"), (form(mask, {"type": "input"}), 400, "original_ref"),
           (form(mask, {"filename": "photo.png", "type": "models"}), 400, "original_ref.type"),
           (form(mask, {"filename": "gone.png", "type": "input"}), 404, "gone.png"),
           (form(mask, {"filename": "photo.png", "subfolder": "../..", "type": "input"}), 403, "leaves"),
           (form(mask, {"filename": "../photo.png", "type": "input"}), 400, "invalid filename"),
           (form(b"not an image", {"filename": "photo.png", "type": "input"}), 400, "image")]
    for data, status, words in bad:
        response = await client.post("/api/upload/mask", data=data)
        assert response.status == status and words in (await response.json())["error"], (status, words)
    no_file = FormData()
    no_file.add_field("original_ref", json.dumps({"filename": "photo.png"}))
    assert (await client.post("/upload/mask", data=no_file)).status == 400
    oversize = await client.post("/upload/mask", data=form(b"\0" * 80_000, {"filename": "photo.png"}))
    assert oversize.status == 413


async def test_internal_logs_and_files(served):
    client, app = served
    import logging
    logging.getLogger("server.test").warning("a line for the log terminal")
    raw = await (await client.get("/internal/logs/raw")).json()
    assert any("a line for the log terminal" in e["m"] for e in raw["entries"]) and raw["size"]["cols"] > 0
    assert "a line for the log terminal" in await (await client.get("/internal/logs")).json()
    assert (await client.patch("/internal/logs/subscribe", json={"clientId": "c", "enabled": True})).status == 200
    bad = await client.patch("/internal/logs/subscribe", json={"enabled": True})
    assert bad.status == 400 and "clientId" in (await bad.json())["error"]
    assert (await client.patch("/internal/logs/subscribe", data="{")).status == 400
    (app.folder_for("output") / "x.png").write_bytes(png())
    (app.folder_for("output") / "notes.txt").write_text("")  # not media: not listed, as on ComfyUI
    assert await (await client.get("/internal/files/output")).json() == ["x.png"]
    wrong = await client.get("/internal/files/models")
    assert wrong.status == 400 and "directory_type" in (await wrong.json())["error"]


def holding_job(prompt="hold the worker") -> str:
    return json.dumps({"prompt": prompt, "async_process": True,
                       "advanced_params": {"overwrite_step": 200}})  # 200 steps of 0.2 s: stopped by the test


async def test_jobs_view_lists_and_cancels_fooocus_jobs(served):
    client, app = served
    running = (await (await client.post("/v1/generation/text-to-image", data=holding_job())).json())["job_id"]
    waiting = (await (await client.post("/v1/generation/text-to-image", data=holding_job())).json())["job_id"]
    await until(lambda: _status_of(client, running, "in_progress"))
    active = await (await client.get("/api/jobs", params={"status": "in_progress,pending"})).json()
    assert [(j["id"], j["status"]) for j in active["jobs"]] == [(waiting, "pending"), (running, "in_progress")]
    assert all(j["create_time"] > 0 for j in active["jobs"]) and active["pagination"]["total"] == 2
    detail = await (await client.get(f"/api/jobs/{waiting}")).json()
    assert detail["status"] == "pending" and "prompt" in detail["workflow"]

    # the UI's cancel: the waiting Fooocus job leaves the queue and its record says so
    assert (await client.post(f"/api/jobs/{waiting}/cancel")).status == 200
    record = await (await client.get("/v1/generation/query-job", params={"job_id": waiting})).json()
    assert record["job_stage"] == "ERROR" and record["job_result"][0]["finish_reason"] == "USER_CANCEL"
    # the running one is interrupted and ends in the history as cancelled
    assert (await client.post("/api/jobs/cancel", json={"job_ids": [running, "unknown"]})).status == 200
    await until(lambda: _status_of(client, running, "cancelled"))
    done = await (await client.get("/api/jobs", params={"status": "cancelled"})).json()
    assert [j["id"] for j in done["jobs"]] == [running]
    assert done["jobs"][0]["execution_start_time"] <= done["jobs"][0]["execution_end_time"]


async def test_queue_delete_from_a_comfy_client_cancels_a_fooocus_job(served):
    client, _ = served
    running = (await (await client.post("/v1/generation/text-to-image", data=holding_job())).json())["job_id"]
    waiting = (await (await client.post("/v1/generation/text-to-image", data=holding_job())).json())["job_id"]
    await until(lambda: _status_of(client, running, "in_progress"))
    assert (await client.post("/api/queue", json={"delete": [waiting]})).status == 200
    record = await (await client.get("/v1/generation/query-job", params={"job_id": waiting})).json()
    assert record["job_result"][0]["finish_reason"] == "USER_CANCEL"
    await client.post("/api/interrupt")
    await until(lambda: _status_of(client, running, "cancelled"))


async def _status_of(client, job_id: str, status: str) -> bool:
    response = await client.get(f"/api/jobs/{job_id}")
    return response.status == 200 and (await response.json())["status"] == status


@pytest.mark.parametrize("query, words", [({"status": "done"}, "status"), ({"sort_by": "name"}, "sort_by"),
                                          ({"sort_order": "up"}, "sort_order"), ({"limit": "0"}, "limit"),
                                          ({"limit": "x"}, "limit"), ({"offset": "-1"}, "offset")])
async def test_jobs_bad_queries(served, query, words):
    client, _ = served
    response = await client.get("/api/jobs", params=query)
    assert response.status == 400 and words in (await response.json())["error"]


async def test_jobs_unknown_and_malformed_cancels(served):
    client, _ = served
    assert (await client.get("/api/jobs/nope")).status == 404
    assert (await client.post("/api/jobs/nope/cancel")).status == 404
    for body in ("{", json.dumps({"job_ids": "a"}), json.dumps({"job_ids": [1]}), json.dumps([])):
        response = await client.post("/api/jobs/cancel", data=body)
        assert response.status == 400 and "job_ids" in (await response.json())["error"]
    empty = await (await client.get("/api/jobs", params={"limit": "5"})).json()
    assert empty == {"jobs": [], "pagination": {"offset": 0, "limit": 5, "total": 0, "has_more": False}}


def test_history_job_of_a_fooocus_image():
    from server.jobs_view import history_job

    image = {"filename": "x.png", "subfolder": "files/2026-12-01", "type": "output"}
    entry = {"prompt": [3, "job", {}, {"create_time": 5}, ["save"]],
             "outputs": {"save": {"images": [image], "fooocus_images": [{"url": "u", "path": "p"}]}},
             "status": {"status_str": "success", "messages": [["execution_start", {"timestamp": 10}],
                                                              ["execution_success", {"timestamp": 30}]]}}
    job = history_job("job", entry, detail=True)
    assert (job["status"], job["outputs_count"], job["previewable_outputs_count"]) == ("completed", 1, 1)
    assert job["preview_output"] == {**image, "nodeId": "save", "mediaType": "images"}
    assert (job["create_time"], job["execution_start_time"], job["execution_end_time"]) == (5, 10, 30)
    assert job["workflow"] == {"prompt": {}, "extra_data": {"create_time": 5}}
    failed = {**entry, "status": {"status_str": "error", "messages": [["execution_error", {"timestamp": 9,
                                                                                          "node_id": "n"}]]}}
    assert history_job("job", failed)["status"] == "failed"
    assert history_job("job", failed)["execution_error"]["node_id"] == "n"


@pytest.mark.parametrize("method, path", [("GET", "/api/assets?limit=5"), ("POST", "/api/secrets"),
                                          ("GET", "/api/jobs/x/assets"), ("GET", "/api/hub/workflows"),
                                          ("POST", "/api/workspace/provider-policy"), ("GET", "/docs/KSampler/en.md")])
async def test_cloud_only_routes_answer_not_found_not_500(served, method, path):
    client, _ = served
    response = await client.request(method, path)
    assert response.status in (404, 405)  # as ComfyUI, whose static root answers what no route takes
