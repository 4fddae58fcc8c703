"""ModelFetcher: which missing model files can be fetched, and fetching them into our models dir.

Planners ask at their file check (`fetch_later`): when every missing file is in the catalog and
downloads are on, they raise FilesToFetch instead of failing; the Fooocus job is then queued
with its downloads, and the worker fetches them (the job's status reads "downloading <file>
NN%") before planning and running the job's workflow. With downloads off (`--no-download`) the
check returns and the planner fails the job naming the files, as before.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from .catalog import Catalog, KnownFile
from .downloader import Downloader, DownloadError

log = logging.getLogger(__name__)

# (file, bytes done, total bytes or None)
FileProgress = Callable[[KnownFile, int, "int | None"], None]


class FilesToFetch(Exception):
    """A plannable request whose missing model files can all be downloaded first."""

    def __init__(self, files: list[KnownFile], fetcher: "ModelFetcher") -> None:
        super().__init__("model files to download first: " + ", ".join(f"{f.folder}/{f.name}" for f in files))
        self.files = files
        self.fetcher = fetcher  # who fetches them, when the job's turn comes


@dataclass
class FetchReport:
    fetched: list[Path]
    failed: list[str]  # one error message per file


class ModelFetcher:
    def __init__(self, folders, catalog: Catalog, downloader: Downloader, *, enabled: bool) -> None:
        self.folders = folders
        self.catalog = catalog
        self.downloader = downloader
        self.enabled = enabled  # False: --no-download (and Apps built in code): never a request

    @classmethod
    def from_config(cls, folders, config) -> "ModelFetcher":
        return cls(folders, Catalog.load(), Downloader.from_environment(), enabled=bool(config.download))

    def present(self, folder: str, name: str) -> bool:
        try:
            self.folders.path(folder, name)
            return True
        except FileNotFoundError:
            return False

    def missing(self, files: Iterable[KnownFile]) -> list[KnownFile]:
        return [f for f in files if not self.present(f.folder, f.name)]

    def fetch_later(self, needed: Iterable[tuple[str, str]]) -> None:
        """At a planner's file check: raises FilesToFetch when downloads are on and every missing
        (folder, name) is a known file; returns otherwise (the caller then fails the job)."""
        if not self.enabled:
            return
        missing = [(folder, name) for folder, name in needed if not self.present(folder, name)]
        known = [self.catalog.get(folder, name) for folder, name in missing]
        if missing and all(known):
            raise FilesToFetch(known, self)

    def destination(self, file: KnownFile) -> Path:
        """Downloads go to our models dir (the first root), never into a user's other install."""
        return self.folders.directories(file.folder)[0] / file.name

    def fetch(self, file: KnownFile, *, progress: FileProgress | None = None,
              cancelled: Callable[[], bool] | None = None) -> Path:
        """Download one file unless some root has it; raises DownloadError when it fails."""
        if self.present(file.folder, file.name):
            return self.folders.path(file.folder, file.name)
        if not self.enabled:
            raise DownloadError(file.name, file.url, "downloads are off (--no-download); put the file into "
                                                     f"{self.destination(file).parent}")
        report = (lambda done, total: progress(file, done, total)) if progress is not None else None
        path = self.downloader.download(file.url, self.destination(file), size=file.size, sha256=file.sha256,
                                        progress=report, cancelled=cancelled)
        self.folders.invalidate(file.folder)
        return path

    def fetch_all(self, files: Iterable[KnownFile], *, stop_when_offline: bool = True) -> FetchReport:
        """Start-up and --download-only: each missing file in turn, failures collected (and logged)
        rather than raised. Once a file fails to connect at all, the rest are skipped: an offline
        machine starts at once with what it has (the demo models)."""
        report = FetchReport([], [])
        pending = self.missing(files)
        for index, file in enumerate(pending):
            try:
                report.fetched.append(self.fetch(file))
            except DownloadError as exc:
                report.failed.append(str(exc))
                log.error("%s", exc)
                if stop_when_offline and _unreachable(exc):
                    skipped = pending[index + 1:]
                    if skipped:
                        log.warning("the download server cannot be reached: skipping %d more file(s): %s",
                                    len(skipped), ", ".join(f.name for f in skipped))
                        report.failed.extend(f"{f.name}: skipped (offline)" for f in skipped)
                    break
        return report


def _unreachable(exc: DownloadError) -> bool:
    """A cause no later file would escape: name resolution or connection refused/unreachable."""
    cause = exc.cause.lower()
    return any(text in cause for text in ("name or service", "nodename", "temporary failure in name",
                                          "connection refused", "network is unreachable", "no route to host",
                                          "timed out"))
