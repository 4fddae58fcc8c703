"""The official ComfyUI frontend served by us, driven in headless Chromium (the distribution's
package, through Playwright's `executable_path`: no browser download).

One page session: the default workflow loads with the demo checkpoints in its list, "Queue" runs
it (shrunk in the page to 64x64 and 6 steps: at its own 512x512 and 20 steps it takes minutes on a
CPU), progress arrives and the image shows; then workflows/text_to_image.json goes through the
UI's open-workflow file input and is queued as well (its checkpoints set to demo ones in the page:
the file names Fooocus' defaults, which the Fooocus API's planner resolves but a raw queue does
not), and every prebuilt workflow's template is checked to queue exactly its API graph. Last, two
Fooocus API jobs show in the queue panel and its buttons cancel them. Without Chromium or Playwright the test fails and says why; it is never skipped.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from server.fooocus.setup import attach_fooocus_api

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
LOAD_TIMEOUT_MS = 120_000
RUN_TIMEOUT_MS = 240_000  # the first run loads the tiny checkpoint; on a busy 2-core machine that can take a while

pytestmark = pytest.mark.timeout(600)


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("no chromium on PATH: install the distribution's package (apt-get install -y chromium); "
                "scripts/test.sh does this when run as root")


def playwright_api():
    try:
        from playwright.async_api import async_playwright
    except ImportError as exc:
        pytest.fail(f"playwright is not installed ({exc}): bash scripts/setup_env.sh test")
    return async_playwright


@pytest.fixture
async def ui_server(aiohttp_server, demo_app_factory, tmp_path):
    app = demo_app_factory(user_dir=tmp_path / "user")
    attach_fooocus_api(app)
    server = await aiohttp_server(app.make_web_app())
    return server, app


RECORD_EVENTS = """() => {
  window.__events = [];
  for (const name of ['progress', 'executed', 'execution_success', 'execution_error'])
    window.comfyAPI.api.api.addEventListener(name, e => window.__events.push([name, e.detail]));
  window.__titles = [];  // the page shows a running node's progress in its title: "[0%][50%] KSampler"
  new MutationObserver(() => window.__titles.push(document.title)).observe(
    document.querySelector('title'), {childList: true, subtree: true, characterData: true});
}"""

SET_WIDGETS = """([changes]) => {
  const missing = [];
  for (const [type, name, value] of changes) {
    const nodes = window.app.graph._nodes.filter(n => n.type === type);
    const widgets = nodes.map(n => (n.widgets || []).find(w => w.name === name)).filter(Boolean);
    if (!widgets.length) missing.push(type + '.' + name);
    for (const w of widgets) w.value = value;
  }
  return missing;
}"""

FINISHED = "() => window.__events.some(e => e[0] === 'execution_success' || e[0] === 'execution_error')"


async def queue_and_wait(page) -> dict:
    """Click the Queue button and wait for the prompt to end; returns the events seen."""
    await page.evaluate("() => { window.__events.length = 0; }")
    await page.click("[data-testid=queue-button]")
    await page.wait_for_function(FINISHED, timeout=RUN_TIMEOUT_MS)
    events = await page.evaluate("() => window.__events")
    errors = [e[1] for e in events if e[0] == "execution_error"]
    assert not errors, f"the queued workflow failed: {errors}"
    return events


async def test_web_ui_default_and_fooocus_workflow(ui_server, tmp_path):
    server, app = ui_server
    base = str(server.make_url("/"))
    origin = base.rstrip("/")
    # a returning user: the first visit opens the template browser instead of the default graph
    async with server_session(server) as session:
        assert (await session.post("/api/settings", json={"Comfy.TutorialCompleted": True})).status == 200
    async with playwright_api()() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            failures, console_errors = [], []
            page.on("response", lambda r: failures.append(f"{r.status} {r.request.method} {r.url}")
                    if r.status >= 400 and r.url.startswith(origin) and not placeholder_input(r.url) else None)
            page.on("console", lambda m: console_errors.append(f"{m.text} at {m.location.get('url')}")
                    if m.type == "error" and not frontend_own_error(m.text, m.location.get("url") or "", origin)
                    else None)
            await page.goto(base)
            await page.wait_for_function("() => window.app?.graph?._nodes?.length > 0", timeout=LOAD_TIMEOUT_MS)

            # the default workflow, its checkpoint list from our /object_info
            types = sorted(await page.evaluate("() => window.app.graph._nodes.map(n => n.type)"))
            assert types == sorted(["CheckpointLoaderSimple", "CLIPTextEncode", "CLIPTextEncode", "EmptyLatentImage",
                                    "KSampler", "VAEDecode", "SaveImage"])
            choices = await page.evaluate("""() => window.app.graph._nodes.find(n => n.type === 'CheckpointLoaderSimple')
                                               .widgets.find(w => w.name === 'ckpt_name').options.values""")
            assert {"tiny-sd15.safetensors", "tiny-sdxl.safetensors"} <= set(choices)

            await page.evaluate(RECORD_EVENTS)
            assert await page.evaluate(SET_WIDGETS, [[
                ["CheckpointLoaderSimple", "ckpt_name", "tiny-sd15.safetensors"],
                ["EmptyLatentImage", "width", 64], ["EmptyLatentImage", "height", 64], ["KSampler", "steps", 6]]]) == []
            events = await queue_and_wait(page)
            progress = [e[1]["value"] for e in events if e[0] == "progress"]
            assert progress and progress[-1] == 6, progress
            titles = await page.evaluate("() => window.__titles")
            assert any(title.endswith("[100%] KSampler") for title in titles), titles
            saved = [e[1]["output"]["images"][0]["filename"] for e in events if e[0] == "executed"]
            assert saved, events
            # the finished image is shown in the page (loaded from our /view)
            await page.wait_for_function("""(name) => [...document.querySelectorAll('img')].some(
                i => i.src.includes('/view?') && i.src.includes(name) && i.complete && i.naturalWidth === 64)""",
                                         arg=saved[0], timeout=LOAD_TIMEOUT_MS)
            await page.screenshot(path=str(tmp_path / "default_workflow.png"))
            assert (tmp_path / "default_workflow.png").stat().st_size > 0

            # workflows/text_to_image.json through the open-workflow path (the page's file input)
            await page.set_input_files("#comfy-file-input", str(WORKFLOWS / "text_to_image.json"))
            await page.wait_for_function("() => window.app.graph._nodes.some(n => n.type === 'FooocusKSampler')",
                                         timeout=LOAD_TIMEOUT_MS)
            loaded = await page.evaluate("() => window.app.graph._nodes.length")
            assert loaded == len(json.loads((WORKFLOWS / "text_to_image.json").read_text()))
            missing = await page.evaluate(SET_WIDGETS, [[
                ["CheckpointLoaderSimple", "ckpt_name", "tiny-sdxl.safetensors"],
                ["EmptyLatentImage", "width", 64], ["EmptyLatentImage", "height", 64],
                ["FooocusKSampler", "steps", 3]]])
            assert missing == []
            await page.keyboard.press("Escape")  # a missing-models notice may cover the button
            events = await queue_and_wait(page)
            assert any(e[0] == "executed" for e in events), events
            await page.screenshot(path=str(tmp_path / "text_to_image.png"))
            # every prebuilt workflow offered as a template serialises back to its own API graph
            for path in sorted(WORKFLOWS.glob("*.json")):
                if path.name.endswith(".params.json"):
                    continue
                assert await template_round_trip(page, path) == [], path.name
            # both runs are in the jobs view the queue panel reads
            async with server_session(server) as session:
                jobs = await (await session.get("/api/jobs", params={"status": "completed"})).json()
            assert jobs["pagination"]["total"] == 2
            await fooocus_jobs_in_the_queue_panel(page, server)
            assert not failures, failures
            assert not console_errors, console_errors
        finally:
            await browser.close()


async def fooocus_jobs_in_the_queue_panel(page, server) -> None:
    """Two Fooocus API jobs (one runs, one waits) show in the queue panel; its "Clear queued" button
    and the top bar's "Cancel current run" end both, as their job records say."""
    from waiting import until

    async with server_session(server) as session:
        ids = []
        # 8 images of 200 steps at Fooocus' own size: the first job holds the worker until cancelled
        # (minutes even on a GPU), so the panel shows one running and one queued
        request = {"prompt": "a cat", "async_process": True, "image_number": 8,
                   "advanced_params": {"overwrite_step": 200}}
        for _ in range(2):
            answer = await session.post("/v1/generation/text-to-image", json=request)
            ids.append((await answer.json())["job_id"])
        clear = page.get_by_role("button", name="Clear queued")
        if not await clear.is_visible():
            await page.click("[data-testid=queue-overlay-toggle]")
        await page.wait_for_function("""() => /1\\s*running/.test(document.body.innerText)
                                              && /1\\s*queued/.test(document.body.innerText)""", timeout=LOAD_TIMEOUT_MS)

        async def finish_reason(job_id):
            body = await (await session.get("/v1/generation/query-job", params={"job_id": job_id})).json()
            return body["job_stage"] == "ERROR" and body["job_result"][-1]["finish_reason"]

        await clear.click()
        assert await until(lambda: finish_reason(ids[1]), timeout=RUN_TIMEOUT_MS / 1000) == "USER_CANCEL"
        await page.get_by_role("button", name="Cancel current run").click()
        assert await until(lambda: finish_reason(ids[0]), timeout=RUN_TIMEOUT_MS / 1000) == "USER_CANCEL"


TEMPLATE_TO_PROMPT = """async (name) => {
  const graph = await (await fetch('/templates/' + name + '.json')).json();
  await window.app.loadGraphData(graph);
  return (await window.app.graphToPrompt()).output;
}"""


async def template_round_trip(page, path: Path) -> list:
    """Differences between a workflow file and what the frontend queues for its template (node ids
    become 1, 2, ... in file order)."""
    original = json.loads(path.read_text())
    ids = list(original)
    queued = await page.evaluate(TEMPLATE_TO_PROMPT, path.stem)
    differences = []
    for index, node_id in enumerate(ids):
        node = queued.get(str(index + 1))
        if node is None or node["class_type"] != original[node_id]["class_type"]:
            differences.append((node_id, "node missing"))
            continue
        for name, value in original[node_id]["inputs"].items():
            if isinstance(value, list):
                value = [str(ids.index(value[0]) + 1), value[1]]
            if node["inputs"].get(name) != value:
                differences.append((node_id, name, value, node["inputs"].get(name)))
    return differences


# console errors that are not about our routes: the frontend's own start-up race (an extension reads
# app.graph before the app made it, as it does on ComfyUI), and its calls to comfy.org, unreachable offline
FRONTEND_OWN_ERRORS = ("ComfyApp graph accessed before initialization",)


def placeholder_input(url: str) -> bool:
    """The LoadImage previews of the templates' placeholder inputs (example.png, ...), which are not
    uploaded here: a 404, as on ComfyUI."""
    return "/api/view?" in url and "type=input" in url


def frontend_own_error(text: str, url: str, origin: str) -> bool:
    if any(known in text for known in FRONTEND_OWN_ERRORS):
        return True
    if "Failed to load resource" in text and placeholder_input(url):
        return True
    return "Failed to load resource" in text and bool(url) and not url.startswith(origin)


def server_session(server):
    import aiohttp

    return aiohttp.ClientSession(base_url=str(server.make_url("/")))
