"""Model files: the downloader (resume, retries, checksums, progress), the catalog of known
Fooocus files, the fetcher planners ask on first use, and the start-up downloads."""
from .catalog import Catalog, KnownFile
from .downloader import ChecksumMismatch, DownloadCancelled, DownloadError, Downloader, DownloadLimits
from .fetcher import FilesToFetch, ModelFetcher

__all__ = ["Catalog", "ChecksumMismatch", "DownloadCancelled", "DownloadError", "Downloader", "DownloadLimits",
           "FilesToFetch", "KnownFile", "ModelFetcher"]
