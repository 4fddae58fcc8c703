"""One file over HTTP(S) into a model folder, safely.

- The bytes go to `<name>.part` and are renamed onto `<name>` (os.replace, atomic) only when
  complete and verified, so no half file ever carries the final name.
- An interrupted download resumes: the next attempt (or the next run) sends `Range: bytes=N-`
  for the N bytes the `.part` holds; a server that answers 200 instead restarts the file.
- Transient failures (connection errors, timeouts, 5xx, 429, a body cut short) are retried with
  exponential backoff; a 4xx is final. Each read has a timeout; a size cap (the known size, else
  `max_bytes`) stops a server that sends more than it should.
- A known sha256 (and size) is checked; a mismatch deletes the file and says so.
- `HF_MIRROR` (as Fooocus honours it) replaces https://huggingface.co in URLs.
- Progress: a tqdm bar (size, speed) on the console and an optional callback (the job status).
Errors name the file, the URL and the cause.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

HF_HOST = "https://huggingface.co"
CHUNK = 1 << 20
USER_AGENT = "sdxl-node-server model downloader"
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

Progress = Callable[[int, int | None], None]  # (bytes done, total bytes or None)


class DownloadError(Exception):
    """A download that failed for good; `str()` names the file, the URL and the cause."""

    def __init__(self, name: str, url: str, cause: str) -> None:
        super().__init__(f"could not download {name} from {url}: {cause}")
        self.name, self.url, self.cause = name, url, cause


class ChecksumMismatch(DownloadError):
    pass


class DownloadCancelled(Exception):
    """Stopped by request; the `.part` file is kept so a later attempt resumes."""


@dataclass(frozen=True)
class DownloadLimits:
    attempts: int = 5
    backoff_s: float = 1.0  # first retry waits this long, each next one twice as long
    max_backoff_s: float = 30.0
    read_timeout_s: float = 30.0  # connect and each read
    max_bytes: int = 64 << 30  # cap when the size is unknown (the largest SDXL files are ~7 GB)


class _Transient(Exception):
    """Worth another attempt (the .part keeps what arrived)."""


class Downloader:
    def __init__(self, limits: DownloadLimits = DownloadLimits(), *, mirror: str | None = None,
                 progress_bar: bool = True, stream=None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.limits = limits
        self.mirror = (mirror or "").rstrip("/") or None  # HF_MIRROR, read by whoever builds us
        self.progress_bar = progress_bar
        self.stream = stream  # where the bar goes (default: sys.stderr at the time of the download)
        self.sleep = sleep
        self._locks: dict[Path, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    @classmethod
    def from_environment(cls, **options) -> "Downloader":
        return cls(mirror=os.environ.get("HF_MIRROR"), **options)

    def resolve_url(self, url: str) -> str:
        if self.mirror and url.startswith(HF_HOST + "/"):
            return self.mirror + url[len(HF_HOST):]
        return url

    def _lock_for(self, path: Path) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(path.resolve(), threading.Lock())

    def download(self, url: str, destination: str | Path, *, size: int | None = None, sha256: str | None = None,
                 progress: Progress | None = None, cancelled: Callable[[], bool] | None = None) -> Path:
        """Fetch `url` into `destination` (skipped when it is already there); returns the path."""
        destination = Path(destination)
        with self._lock_for(destination):  # two jobs wanting one file: the second finds it done
            if destination.is_file():
                return destination
            destination.parent.mkdir(parents=True, exist_ok=True)
            url = self.resolve_url(url)
            part = destination.with_name(destination.name + ".part")
            attempt = 0
            while True:
                attempt += 1
                try:
                    self._attempt(url, part, destination.name, size, progress, cancelled)
                    break
                except _Transient as exc:
                    if attempt >= self.limits.attempts:
                        raise DownloadError(destination.name, url,
                                            f"{exc} (gave up after {attempt} attempts; "
                                            f"{_size_text(_part_size(part))} kept in {part.name} for a resume)") from None
                    wait = min(self.limits.max_backoff_s, self.limits.backoff_s * 2 ** (attempt - 1))
                    log.warning("download of %s: %s; retrying in %.1f s (attempt %d of %d)", destination.name, exc,
                                wait, attempt + 1, self.limits.attempts)
                    self.sleep(wait)
            self._verify(part, destination.name, url, size, sha256)
            os.replace(part, destination)
            log.info("downloaded %s (%s)", destination, _size_text(destination.stat().st_size))
            return destination

    # --- one attempt ------------------------------------------------------------------------
    def _attempt(self, url: str, part: Path, name: str, size: int | None, progress: Progress | None,
                 cancelled: Callable[[], bool] | None) -> None:
        have = _part_size(part)
        if size is not None and have == size:
            return  # complete already (an earlier run stopped before the rename)
        if size is not None and have > size:
            part.unlink()
            have = 0
        headers = {"User-Agent": USER_AGENT}
        if have:
            headers["Range"] = f"bytes={have}-"
        request = urllib.request.Request(url, headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=self.limits.read_timeout_s)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:  # nothing after what we have: the .part may be whole
                total = _range_total(exc.headers.get("Content-Range"))
                if total == have:
                    return
                part.unlink()
                raise _Transient(f"HTTP 416 for a resume at {have} bytes; starting over") from None
            if exc.code in RETRY_STATUSES:
                raise _Transient(f"HTTP {exc.code} {exc.reason}") from None
            raise DownloadError(name, url, f"HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:  # refused, DNS, timeout, reset
            raise _Transient(_cause(exc)) from None
        with response:
            status = response.status
            if status == 206 and have:
                start = _range_start(response.headers.get("Content-Range"))
                if start != have:
                    part.unlink(missing_ok=True)
                    raise _Transient(f"the server resumed at byte {start}, not {have}; starting over")
                mode = "ab"
            else:
                mode, have = "wb", 0  # 200: the server sends the whole file again
            length = response.headers.get("Content-Length")
            total = have + int(length) if length and length.isdigit() else size
            cap = size if size is not None else self.limits.max_bytes
            if total is not None and total > cap:
                raise DownloadError(name, url, f"the server offers {_size_text(total)}, more than the "
                                               f"{_size_text(cap)} expected")
            bar = self._bar(name, total, have)
            try:
                with open(part, mode) as out:
                    done = have
                    while True:
                        if cancelled is not None and cancelled():
                            raise DownloadCancelled(f"download of {name} stopped by request")
                        try:
                            chunk = response.read1(CHUNK)  # what has arrived: progress moves with the bytes
                        except (OSError, ValueError) as exc:  # timeout or reset mid-body
                            raise _Transient(f"{_cause(exc)} after {_size_text(done)}") from None
                        if not chunk:
                            break
                        done += len(chunk)
                        if done > cap:
                            out.truncate(0)
                            raise DownloadError(name, url, f"the server sent more than {_size_text(cap)}")
                        out.write(chunk)
                        if bar is not None:
                            bar.update(len(chunk))
                        if progress is not None:
                            progress(done, total)
            finally:
                if bar is not None:
                    bar.close()
            if total is not None and done < total:
                raise _Transient(f"the connection closed after {_size_text(done)} of {_size_text(total)}")

    def _bar(self, name: str, total: int | None, initial: int):
        if not self.progress_bar:
            return None
        from tqdm import tqdm  # the console bar (size, speed) users know from Fooocus and ComfyUI

        return tqdm(total=total, initial=initial, desc=name, unit="B", unit_scale=True, unit_divisor=1024,
                    file=self.stream or sys.stderr, mininterval=0.5, dynamic_ncols=True, leave=True)

    @staticmethod
    def _verify(part: Path, name: str, url: str, size: int | None, sha256: str | None) -> None:
        actual_size = _part_size(part)
        if size is not None and actual_size != size:
            part.unlink(missing_ok=True)
            raise ChecksumMismatch(name, url, f"{_size_text(actual_size)} arrived, {size} bytes expected; "
                                              "the file was deleted")
        if sha256:
            digest = file_sha256(part)
            if digest.lower() != sha256.lower():
                part.unlink(missing_ok=True)
                raise ChecksumMismatch(name, url, f"sha256 is {digest}, expected {sha256.lower()}; "
                                                  "the file was deleted")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _part_size(part: Path) -> int:
    try:
        return part.stat().st_size
    except OSError:
        return 0


def _range_start(header: str | None) -> int | None:
    """`bytes 100-199/200` -> 100."""
    try:
        return int(header.split()[1].split("-")[0]) if header else None
    except (IndexError, ValueError):
        return None


def _range_total(header: str | None) -> int | None:
    """`bytes */200` or `bytes 0-9/200` -> 200."""
    try:
        return int(header.rsplit("/", 1)[1]) if header else None
    except (IndexError, ValueError):
        return None


def _cause(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if isinstance(exc, TimeoutError) or isinstance(reason, TimeoutError) or "timed out" in str(exc):
        return "timed out"
    return str(reason or exc) or type(exc).__name__


def _size_text(count: int | None) -> str:
    if count is None:
        return "an unknown size"
    if count < 1024:
        return f"{count} bytes"
    value = float(count)
    for unit in ("KB", "MB", "GB", "TB"):
        value /= 1024
        if value < 1024 or unit == "TB":
            break
    return f"{value:.1f} {unit}"
