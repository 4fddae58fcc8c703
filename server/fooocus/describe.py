"""POST /v1/tools/describe-image: a caption (Photo, BLIP) or tags (Anime, WD14) of an uploaded image.

As in Fooocus-API the call is not queued: it answers `{"describe": "..."}` at once, even while a
long generation job runs. It runs a small workflow (workflows/describe_photo.json or
describe_anime.json: LoadImage -> loader -> BLIPCaption / WD14Tagger) on an executor of its own,
beside the job queue: its cache keeps the describe models loaded between calls (the BLIP network
under the App's model manager), at most `max_calls` calls are admitted at once (one runs, the
others wait for it; more are told 503 "busy"), and each is bounded by `timeout_s` (504; the
caption stops at its next token).

Request: multipart file `image` (base64 text is accepted too), query `image_type` (Fooocus-API's
name today) or `type` (its old name, which the API document's example still sends): `Photo`
(default) or `Anime`, any case. Bad input is a 422 naming the field; a missing model file is a
503 naming the file and the folder it belongs in.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Literal, Optional

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import AliasChoices, BaseModel, Field

from graph import Executor, InterruptFlag, LRUCache, validate_prompt
from graph.executor import ExecutionOutcome
from nodes.describe import FOLDER, TINY_BLIP_FILE, TINY_WD14_FILE, DescribeModelMissing
from models.interrogate.blip import BLIP_CAPTION_FILE, BlipTokenizerMissing
from models.interrogate.blip_keys import BlipCheckpointError
from models.interrogate.wd14 import WD14_MODEL_FILE, WD14Error
from workflows import Workflow

from server.downloads.downloader import DownloadError

from .images import decode_input_image

log = logging.getLogger(__name__)

ROUTE = "/v1/tools/describe-image"
OUTPUT_NODE = "describe"
INPUT_SUBFOLDER = "describe"  # uploads live in the input folder only while they are described
# Failures that mean "the models folder lacks or holds a bad describe model": 503, not 500.
MODEL_FILE_ERRORS = tuple(f"{kind.__module__}.{kind.__qualname__}" for kind in
                          (DescribeModelMissing, BlipTokenizerMissing, BlipCheckpointError, WD14Error))


class DescribeImageType(str, Enum):
    PHOTO = "Photo"
    ANIME = "Anime"


class DescribeQuery(BaseModel):
    """Query of POST /v1/tools/describe-image."""

    # a Literal, not the enum, so the query parameter's schema is inline (any case is accepted)
    image_type: Literal["Photo", "Anime"] = Field("Photo", validation_alias=AliasChoices("image_type", "type"),
                                                  description="`Photo` (BLIP caption) or `Anime` (WD14 tags)")


class DescribeForm(BaseModel):
    """Multipart body of POST /v1/tools/describe-image."""

    image: bytes = Field(description="the image file (PNG, JPEG, WebP, ...)")


class DescribeResponse(BaseModel):
    describe: str = Field(description="the caption (Photo) or comma-separated tags (Anime)")


@dataclass(frozen=True)
class DescribeCapability:
    workflow: Workflow
    model_files: tuple[str, ...]  # tried in this order in clip_vision/: the real file, then the demo one
    needs: str  # the real files, for the error message


def describe_capabilities() -> dict[DescribeImageType, DescribeCapability]:
    return {
        DescribeImageType.PHOTO: DescribeCapability(
            Workflow.load("describe_photo"), (BLIP_CAPTION_FILE, TINY_BLIP_FILE),
            f"{BLIP_CAPTION_FILE} (Fooocus' BLIP caption model, Hugging Face lllyasviel/misc) with BERT's uncased "
            f"vocab.txt in bert_tokenizer/"),
        DescribeImageType.ANIME: DescribeCapability(
            Workflow.load("describe_anime"), (WD14_MODEL_FILE, TINY_WD14_FILE),
            f"{WD14_MODEL_FILE} and {Path(WD14_MODEL_FILE).with_suffix('.csv').name} (Fooocus' WD14 tagger, "
            f"Hugging Face lllyasviel/misc)"),
    }


class DescribeBusy(Exception):
    pass


class DescribeTimeout(Exception):
    pass


class DescribeRunner:
    """Runs describe workflows beside the job queue, on an executor of its own."""

    def __init__(self, registry, services, *, max_calls: int = 2, timeout_s: float = 120.0,
                 cache_entries: int = 8) -> None:
        self.registry = registry
        self.executor = Executor(registry, LRUCache(cache_entries), services)
        self.max_calls = max_calls
        self.timeout_s = timeout_s
        self._admitted = threading.BoundedSemaphore(max_calls)
        self._executing = threading.Lock()  # an Executor runs one prompt at a time

    async def run(self, prompt: dict, cleanup: Callable[[], None] = lambda: None) -> ExecutionOutcome:
        """The outcome of `prompt`; `cleanup` runs once the run has really ended (also after a timeout)."""
        if not self._admitted.acquire(blocking=False):
            cleanup()
            raise DescribeBusy(f"describe is busy ({self.max_calls} calls at once); try again shortly")
        prompt_id, interrupt = f"describe-{uuid.uuid4().hex}", InterruptFlag()
        try:
            future = asyncio.get_running_loop().run_in_executor(None, self._execute, prompt, prompt_id, interrupt,
                                                                cleanup)
        except BaseException:
            self._admitted.release()
            cleanup()
            raise
        try:
            # shielded: a timed-out run keeps its admission until its thread has really stopped
            return await asyncio.wait_for(asyncio.shield(future), self.timeout_s)
        except asyncio.TimeoutError:
            interrupt.request(prompt_id)
            raise DescribeTimeout(f"describe took longer than {self.timeout_s:g} s") from None

    def _execute(self, prompt: dict, prompt_id: str, interrupt: InterruptFlag,
                 cleanup: Callable[[], None]) -> ExecutionOutcome:
        try:
            with self._executing:
                if interrupt.is_set_for(prompt_id):  # timed out while waiting for the previous call
                    return ExecutionOutcome("interrupted")
                checked = validate_prompt(prompt, self.registry)
                if not checked.ok:
                    message = "; ".join(str(error) for error in checked.node_errors.values()) or str(checked.error)
                    raise RuntimeError(f"the describe workflow does not validate: {message}")
                return self.executor.execute(prompt, prompt_id, checked.outputs, checked.constants,
                                             links=checked.links, order=checked.order, interrupt=interrupt)
        finally:
            try:
                cleanup()
            finally:
                self._admitted.release()


def detail(status: int, message: str, **headers) -> web.Response:
    return web.json_response({"detail": message}, status=status, headers=headers or None)


def field_error(location: tuple[str, ...], message: str, kind: str = "value_error", value: Any = None) -> web.Response:
    return web.json_response({"detail": [{"type": kind, "loc": list(location), "msg": message, "input": value}]},
                             status=422)


# the catalog's capability names (server/downloads/known_files.json) per describe type
DOWNLOADS = {DescribeImageType.PHOTO: "describe_photo", DescribeImageType.ANIME: "describe_anime"}


class DescribeRoutes:
    def __init__(self, app, *, max_calls: int = 2, timeout_s: float = 120.0) -> None:
        self.folders = app.folders
        self.fetcher = getattr(app, "fetcher", None)  # first use: Fooocus' describe files (downloads on)
        self.input_dir = Path(app.config.input_dir)
        self.capabilities = describe_capabilities()
        self.runner = DescribeRunner(app.registry, app.services, max_calls=max_calls, timeout_s=timeout_s)

    def routes(self) -> list[tuple[str, str, Any]]:
        return [("POST", ROUTE, self.describe_image)]

    async def describe_image(self, request: web.Request) -> web.Response:
        """Describe an image: a BLIP caption (Photo) or WD14 tags (Anime)."""
        kind, error = self._image_type(request)
        if error is not None:
            return error
        data, error = await self._upload(request)
        if error is not None:
            return error
        loop = asyncio.get_running_loop()  # decoding and storing a big upload take a while: off the loop
        try:
            image = await loop.run_in_executor(None, decode_input_image, data, "image")
        except ValueError as exc:
            return field_error(("body", "image"), str(exc))
        capability = self.capabilities[kind]
        model = self._model_file(capability)
        if model is None:
            try:  # Fooocus downloads the describe models on first use too; the caller waits for them
                model = await loop.run_in_executor(None, self._fetch, kind, capability)
            except DownloadError as exc:
                return detail(503, f"Describe ({kind.value}): {exc}")
        if model is None:
            folder = self.folders.directories(FOLDER)[0]
            return detail(503, f"Describe ({kind.value}) needs {capability.needs} in {folder}")
        name = await loop.run_in_executor(None, self._store, image)
        prompt = capability.workflow.fill({"image": name, "model": model})
        try:
            outcome = await self.runner.run(prompt, cleanup=lambda: self._delete(name))
        except DescribeBusy as busy:
            return detail(503, str(busy), **{"Retry-After": "1"})
        except DescribeTimeout as late:
            return detail(504, str(late))
        return self._answer(outcome)

    @staticmethod
    def _image_type(request: web.Request) -> tuple[DescribeImageType, Optional[web.Response]]:
        for name in ("image_type", "type"):  # the new name wins when a client sends both
            value = request.query.get(name, "").strip()
            if not value:
                continue
            for kind in DescribeImageType:
                if kind.value.casefold() == value.casefold():
                    return kind, None
            return DescribeImageType.PHOTO, field_error(("query", name), "Input should be 'Photo' or 'Anime'",
                                                        "enum", value)
        return DescribeImageType.PHOTO, None

    @staticmethod
    async def _upload(request: web.Request):
        """The raw `image` part (file bytes or text), or a 422."""
        try:
            form = await request.post()
        except (ValueError, HttpProcessingError) as exc:  # a malformed multipart body (bad part headers too)
            return None, field_error(("body",), f"expected a multipart form with a file 'image': {exc}")
        value = form.get("image")
        data = value.file.read() if isinstance(value, web.FileField) else value
        if data is None or len(data) == 0:
            return None, field_error(("body", "image"), "Field required: a multipart file 'image'", "missing")
        return data, None

    def _model_file(self, capability: DescribeCapability) -> Optional[str]:
        for name in capability.model_files:  # in every model root, ours first
            if any((folder / name).is_file() for folder in self.folders.directories(FOLDER)):
                return name
        return None

    def _fetch(self, kind: "DescribeImageType", capability: DescribeCapability) -> Optional[str]:
        """With downloads on: the catalog's files of this describe type, into our models dir."""
        if self.fetcher is None or not self.fetcher.enabled:
            return None
        files = self.fetcher.catalog.for_capabilities({DOWNLOADS[kind]})
        for file in files:
            self.fetcher.fetch(file)
        return self._model_file(capability) if files else None

    def _store(self, image) -> str:
        # BMP: the file is read back once, at once, and deleted; writing a 1024-px PNG costs ~30x more
        name = f"{INPUT_SUBFOLDER}/{uuid.uuid4().hex}.bmp"
        path = self.input_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, format="BMP")
        return name

    def _delete(self, name: str) -> None:
        try:
            (self.input_dir / name).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not delete the describe upload %s: %s", name, exc)

    @staticmethod
    def _answer(outcome: ExecutionOutcome) -> web.Response:
        if outcome.status == "success":
            texts = outcome.outputs.get(OUTPUT_NODE, {}).get("text", [])
            return web.json_response(DescribeResponse(describe=texts[0] if texts else "").model_dump())
        if outcome.status == "interrupted":
            return detail(504, "describe was stopped: it took too long")
        error = outcome.error or {}
        message = error.get("exception_message") or "unknown error"
        if error.get("exception_type") in MODEL_FILE_ERRORS:
            return detail(503, message)
        log.error("describe failed: %s", message)
        return detail(500, f"describe failed: {message}")
