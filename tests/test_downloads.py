"""The downloader against a local HTTP server: resume with Range after a cut, checksums, clear
errors (404, timeout, too large), HF_MIRROR, the progress bar, and start-up downloads from a
preset (none at all with --no-download)."""
from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os

import pytest

from server.config import AppConfig
from server.downloads import Catalog, ChecksumMismatch, DownloadError, Downloader, DownloadLimits, KnownFile
from server.downloads.startup import startup_downloads
from download_server import Served, start_file_server

DATA = os.urandom(300_000)
FAST = DownloadLimits(attempts=3, backoff_s=0.0, read_timeout_s=5.0)


def downloader(**options) -> Downloader:
    options.setdefault("progress_bar", False)
    return Downloader(options.pop("limits", FAST), **options)


async def test_a_cut_download_resumes_with_range_and_ends_byte_identical(aiohttp_server, tmp_path):
    files, base = await start_file_server(aiohttp_server)
    files.files["/m/model.bin"] = Served(DATA, cut_first_at=120_000)
    destination = tmp_path / "loras" / "model.bin"
    part = destination.with_name("model.bin.part")
    between_attempts = []

    def check_between(_seconds):  # the downloader's sleep before its retry: the state after the cut
        between_attempts.append((destination.exists(), part.stat().st_size))

    bar = io.StringIO()
    loader = downloader(progress_bar=True, stream=bar, sleep=check_between)
    path = await asyncio.to_thread(loader.download, f"{base}/m/model.bin", destination, size=len(DATA),
                                   sha256=hashlib.sha256(DATA).hexdigest())
    assert path == destination and destination.read_bytes() == DATA and not part.exists()
    assert between_attempts == [(False, 120_000)]  # never a half file under the final name
    assert files.requests == [("/m/model.bin", None), ("/m/model.bin", "bytes=120000-")]
    shown = bar.getvalue()
    assert "model.bin" in shown and "100%" in shown and "B/s" in shown and "293k" in shown  # size, speed


async def test_a_part_file_from_an_earlier_run_is_resumed(aiohttp_server, tmp_path):
    files, base = await start_file_server(aiohttp_server)
    files.files["/x.bin"] = Served(DATA)
    destination = tmp_path / "x.bin"
    destination.with_name("x.bin.part").write_bytes(DATA[:200_000])
    await asyncio.to_thread(downloader().download, f"{base}/x.bin", destination, size=len(DATA))
    assert destination.read_bytes() == DATA and files.requests == [("/x.bin", "bytes=200000-")]


async def test_a_wrong_sha256_leaves_no_file_and_says_so(aiohttp_server, tmp_path):
    files, base = await start_file_server(aiohttp_server)
    files.files["/x.bin"] = Served(DATA)
    destination = tmp_path / "x.bin"
    with pytest.raises(ChecksumMismatch) as failure:
        await asyncio.to_thread(downloader().download, f"{base}/x.bin", destination, sha256="ab" * 32)
    message = str(failure.value)
    assert "x.bin" in message and f"{base}/x.bin" in message and "sha256" in message and "deleted" in message
    assert hashlib.sha256(DATA).hexdigest() in message
    assert list(tmp_path.iterdir()) == []  # neither the file nor its .part


async def test_a_404_is_a_clear_error_without_retries(aiohttp_server, tmp_path):
    files, base = await start_file_server(aiohttp_server)
    with pytest.raises(DownloadError) as failure:
        await asyncio.to_thread(downloader().download, f"{base}/missing.bin", tmp_path / "missing.bin")
    assert str(failure.value) == f"could not download missing.bin from {base}/missing.bin: HTTP 404 Not Found"
    assert len(files.requests) == 1 and list(tmp_path.iterdir()) == []


async def test_a_timeout_is_a_clear_error_and_the_server_keeps_serving(aiohttp_server, tmp_path):
    files, base = await start_file_server(aiohttp_server)
    files.files["/slow.bin"] = Served(DATA, hang=True)
    files.files["/x.bin"] = Served(DATA)
    slow = downloader(limits=DownloadLimits(attempts=2, backoff_s=0.0, read_timeout_s=0.3))
    with pytest.raises(DownloadError) as failure:
        await asyncio.to_thread(slow.download, f"{base}/slow.bin", tmp_path / "slow.bin")
    assert "slow.bin" in str(failure.value) and "timed out" in str(failure.value)
    assert "gave up after 2 attempts" in str(failure.value) and not (tmp_path / "slow.bin").exists()
    files.stop.set()
    await asyncio.to_thread(slow.download, f"{base}/x.bin", tmp_path / "x.bin")
    assert (tmp_path / "x.bin").read_bytes() == DATA


async def test_more_bytes_than_expected_are_refused(aiohttp_server, tmp_path):
    files, base = await start_file_server(aiohttp_server)
    files.files["/x.bin"] = Served(DATA)
    with pytest.raises(DownloadError) as failure:
        await asyncio.to_thread(downloader().download, f"{base}/x.bin", tmp_path / "x.bin", size=1000)
    assert "more than the 1000 bytes expected" in str(failure.value) and not (tmp_path / "x.bin").exists()
    capped = downloader(limits=DownloadLimits(attempts=1, max_bytes=10_000))
    with pytest.raises(DownloadError):
        await asyncio.to_thread(capped.download, f"{base}/x.bin", tmp_path / "y.bin")
    assert not (tmp_path / "y.bin").exists()


async def test_hf_mirror_replaces_the_hugging_face_host(aiohttp_server, tmp_path, monkeypatch):
    files, base = await start_file_server(aiohttp_server)
    files.files["/lllyasviel/misc/resolve/main/x.bin"] = Served(DATA)
    monkeypatch.setenv("HF_MIRROR", base + "/")
    loader = Downloader.from_environment(limits=FAST, progress_bar=False)
    assert loader.resolve_url("https://example.com/a.bin") == "https://example.com/a.bin"
    await asyncio.to_thread(loader.download, "https://huggingface.co/lllyasviel/misc/resolve/main/x.bin",
                            tmp_path / "x.bin")
    assert (tmp_path / "x.bin").read_bytes() == DATA


def _preset_setup(tmp_path, base: str):
    models = tmp_path / "models"
    (models / "presets").mkdir(parents=True)
    (models / "presets" / "local.json").write_text(json.dumps({
        "default_model": "local-model.safetensors", "previous_default_models": [],
        "checkpoint_downloads": {"local-model.safetensors": f"{base}/ckpt.safetensors"},
        "lora_downloads": {"local-lora.safetensors": f"{base}/lora.safetensors"},
        "embeddings_downloads": {}, "vae_downloads": {}}))
    # the preset's LoRA is in the table (its size checked); no other known file may be fetched here
    catalog = Catalog([KnownFile("loras", "local-lora.safetensors", "unused", size=len(DATA[:5000]))])
    return models, catalog


async def test_the_preset_files_are_fetched_at_start(aiohttp_server, tmp_path):
    files, base = await start_file_server(aiohttp_server)
    files.files["/ckpt.safetensors"] = Served(DATA)
    files.files["/lora.safetensors"] = Served(DATA[:5000])
    models, catalog = _preset_setup(tmp_path, base)
    config = AppConfig(models_dir=models, preset="local", download=True)
    report = await asyncio.to_thread(startup_downloads, config, catalog=catalog, downloader=downloader())
    assert report.failed == []
    assert (models / "checkpoints" / "local-model.safetensors").read_bytes() == DATA
    assert (models / "loras" / "local-lora.safetensors").read_bytes() == DATA[:5000]
    again = await asyncio.to_thread(startup_downloads, config, catalog=catalog, downloader=downloader())
    assert again.fetched == [] and len(files.requests) == 2  # present files are not fetched again


async def test_a_chosen_default_model_that_is_there_skips_the_preset_checkpoint(aiohttp_server, tmp_path):
    files, base = await start_file_server(aiohttp_server)
    files.files["/lora.safetensors"] = Served(DATA[:5000])
    models, catalog = _preset_setup(tmp_path, base)
    (models / "checkpoints").mkdir()
    (models / "checkpoints" / "mine.safetensors").write_bytes(b"a user's own model")
    config = AppConfig(models_dir=models, preset="local", default_model="mine.safetensors", download=True)
    report = await asyncio.to_thread(startup_downloads, config, catalog=catalog, downloader=downloader())
    assert report.failed == [] and files.requests == [("/lora.safetensors", None)]


async def test_no_download_makes_no_request_at_start(aiohttp_server, tmp_path):
    from main import build_parser, config_from_args

    files, base = await start_file_server(aiohttp_server)
    files.files["/ckpt.safetensors"] = Served(DATA)
    models, catalog = _preset_setup(tmp_path, base)
    config = config_from_args(build_parser().parse_args(
        ["--no-download", "--models-dir", str(models), "--preset", "local"]))
    report = await asyncio.to_thread(startup_downloads, config, catalog=catalog, downloader=downloader())
    assert report.fetched == [] and report.failed == [] and files.requests == []
    assert not (models / "checkpoints" / "local-model.safetensors").exists()


async def test_download_only_fetches_and_reports(aiohttp_server, tmp_path, capsys, monkeypatch):
    import main

    files, base = await start_file_server(aiohttp_server)
    files.files["/ckpt.safetensors"] = Served(DATA)
    models, _ = _preset_setup(tmp_path, base)  # the LoRA is not served: a 404, reported
    config = main.config_from_args(main.build_parser().parse_args(
        ["--download-only", "--models-dir", str(models), "--preset", "local"]))
    # an empty table: no real Fooocus file (the expansion model) is fetched from the internet here
    monkeypatch.setattr(Catalog, "load", classmethod(lambda cls, path=None: Catalog([])))
    code = await asyncio.to_thread(main.download_only, config)
    out, err = capsys.readouterr()
    assert code == 1 and "1 file(s) fetched, 1 failed" in out and "HTTP 404" in err
    assert (models / "checkpoints" / "local-model.safetensors").read_bytes() == DATA
    assert "local-model.safetensors" in err  # the progress bar


async def test_an_unreachable_server_skips_the_remaining_start_up_files(aiohttp_server, tmp_path):
    import socket

    with socket.socket() as probe:  # a port nobody listens on: connection refused, as offline
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    models, catalog = _preset_setup(tmp_path, closed)
    config = AppConfig(models_dir=models, preset="local", download=True)
    report = await asyncio.to_thread(startup_downloads, config, catalog=catalog, downloader=downloader())
    assert report.fetched == [] and len(report.failed) == 2
    assert "refused" in report.failed[0].lower() and "gave up after 3 attempts" in report.failed[0]
    assert report.failed[1] == "local-lora.safetensors: skipped (offline)"
