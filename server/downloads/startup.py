"""What the server fetches before it serves (Fooocus' launch.py), and `--download-only`.

At start, with downloads on: the preset's `checkpoint_downloads` (skipped when its model or a
previous default is there), `lora_downloads`, `embeddings_downloads`, `vae_downloads`, and the
"Fooocus V2" prompt-expansion model (Fooocus fetches it at every launch); with `--download-all`
every capability's files too. Failures are logged and the server starts anyway; an unreachable
download server skips the remaining files, so an offline machine starts at once (demo models).
"""
from __future__ import annotations

import logging

from nodes.fooocus.presets import DEFAULT_PRESET, PresetLibrary

from ..folders import ModelFolders
from .catalog import Catalog, KnownFile, preset_files
from .downloader import Downloader, DownloadLimits
from .fetcher import FetchReport, ModelFetcher

log = logging.getLogger(__name__)

# at start an unreachable server should not hold the listener up for long
STARTUP_LIMITS = DownloadLimits(attempts=3, backoff_s=1.0)
ALWAYS_AT_START = ("expansion",)


def startup_files(config, folders: ModelFolders, catalog: Catalog) -> list[KnownFile]:
    presets = PresetLibrary.load([folders.directories("presets")[0]])
    preset = presets.get(config.preset or DEFAULT_PRESET)
    files = preset_files(preset, catalog, folders.list("checkpoints"), config.default_model)
    files += catalog.for_capabilities(ALWAYS_AT_START)
    if config.download_all:
        files += catalog.for_capabilities()
    unique: dict[tuple[str, str], KnownFile] = {}
    for file in files:
        unique.setdefault(file.key, file)
    return list(unique.values())


def startup_downloads(config, *, folders: ModelFolders | None = None, catalog: Catalog | None = None,
                      downloader: Downloader | None = None) -> FetchReport:
    """Fetches the start-up files that are missing (nothing at all when downloads are off)."""
    if not config.download:
        return FetchReport([], [])
    folders = folders or ModelFolders.from_config(config)
    folders.ensure()
    catalog = catalog or Catalog.load()
    fetcher = ModelFetcher(folders, catalog, downloader or Downloader.from_environment(limits=STARTUP_LIMITS),
                           enabled=True)
    files = fetcher.missing(startup_files(config, folders, catalog))
    if files:
        total = sum(f.size or 0 for f in files)
        log.info("fetching %d model file(s) (%s known bytes) into %s: %s", len(files), f"{total:,}",
                 config.models_dir, ", ".join(f"{f.folder}/{f.name}" for f in files))
    report = fetcher.fetch_all(files)
    if report.failed:
        log.warning("%d model file(s) could not be fetched; the server starts with what it has",
                    len(report.failed))
    return report
