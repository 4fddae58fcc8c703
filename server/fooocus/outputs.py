"""Output files of Fooocus jobs: naming, URLs, serving, conversion, base64, deletion.

Layout (specs/fooocus_api.md §7): `<output_dir>/files/<YYYY-MM-DD>/<save_name or job_id>-<i>.<ext>`
(server-local date, 0-based index), served as `{base_url}/files/<YYYY-MM-DD>/<name>`.
"""

from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Callable, Iterable, Optional, Union

from PIL import Image

from server.fooocus.metadata import (
    FOOOCUS_VERSION,
    PILLOW_FORMATS,
    EmbeddedMetadata,
    encode_image,
    read_metadata,
)

SERVED_EXTENSIONS = ("png", "jpg", "jpeg", "webp")
MEDIA_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp"}
MAX_STEM_LENGTH = 128

_DATE_DIR = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_UNSAFE_STEM_CHARS = re.compile(r"[^A-Za-z0-9_.\-]", re.ASCII)


def media_type(extension: str) -> str:
    return MEDIA_TYPES[extension.lower().lstrip(".")]


def safe_stem(name: str) -> str:
    """A file stem that cannot leave its folder or need URL escaping ('' if nothing is left)."""
    return _UNSAFE_STEM_CHARS.sub("_", name).lstrip(".")[:MAX_STEM_LENGTH]


def to_data_url(data: bytes, extension: str) -> str:
    """`data:image/<ext>;base64,...` (jpg is labelled image/jpeg, the registered type)."""
    return f"data:{media_type(extension)};base64,{base64.b64encode(data).decode('ascii')}"


def png_base64(image: Image.Image) -> str:
    """Raw base64 of a PNG without prefix (job_step_preview, generate_mask)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def accepted_extension(accept: Optional[str]) -> Optional[str]:
    """The extension an Accept header asks for when it names exactly one image type."""
    if not accept or "," in accept:
        return None
    main, _, sub = accept.split(";", 1)[0].strip().lower().partition("/")
    if main != "image" or sub not in SERVED_EXTENSIONS:
        return None
    return sub


def convert_for_accept(path: Path, accept: Optional[str]) -> Optional[tuple[bytes, str]]:
    """(bytes, media type) when `accept` asks for another format than the file's; else None,
    meaning "serve the file as it is". Metadata is carried over to the new container."""
    wanted = accepted_extension(accept)
    current = path.suffix.lower().lstrip(".")
    if wanted is None or PILLOW_FORMATS[wanted] == PILLOW_FORMATS.get(current):
        return None
    with Image.open(path) as image:
        found = read_metadata(image)
        metadata = None if found is None else EmbeddedMetadata(
            found.text, found.scheme, found.software or FOOOCUS_VERSION
        )
        image.load()
        return encode_image(image, wanted, metadata), media_type(wanted)


@dataclass(frozen=True)
class SavedImage:
    path: Path
    relative_path: str  # "<YYYY-MM-DD>/<name>", the part of the URL after /files/
    url: str
    extension: str


class OutputStore:
    """Owns `<output_dir>/files`. `today` is injectable so tests pin the date folder."""

    def __init__(
        self,
        output_dir: Union[str, Path],
        base_url: str,
        today: Callable[[], date] = lambda: datetime.now().date(),
    ) -> None:
        self.files_dir = Path(output_dir) / "files"
        self.base_url = base_url.rstrip("/")
        self._today = today

    def file_name(self, stem: str, index: int, extension: str) -> str:
        return f"{stem}-{index}.{extension.lower()}"

    def url_for(self, relative_path: str) -> str:
        return f"{self.base_url}/files/{relative_path}"

    def save(
        self,
        image: Image.Image,
        *,
        job_id: str,
        index: int,
        extension: str = "png",
        save_name: str = "",
        metadata: Optional[EmbeddedMetadata] = None,
    ) -> SavedImage:
        """Write image `index` of a job; the stem is save_name (made safe) or else job_id."""
        extension = extension.lower()
        stem = safe_stem(save_name) or safe_stem(job_id)
        if not stem:
            raise ValueError("an output file needs a save_name or a job_id")
        day = self._today().isoformat()
        name = self.file_name(stem, index, extension)
        folder = self.files_dir / day
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        # Write then rename so a reader never sees a half-written file.
        partial = folder / f".{name}.partial"
        partial.write_bytes(encode_image(image, extension, metadata))
        partial.replace(path)
        relative = f"{day}/{name}"
        return SavedImage(path=path, relative_path=relative, url=self.url_for(relative), extension=extension)

    def data_url(self, saved: SavedImage) -> str:
        """The saved file as a base64 data URL (require_base64)."""
        return to_data_url(saved.path.read_bytes(), saved.extension)

    def resolve(self, day: str, name: str) -> Optional[Path]:
        """The file behind `/files/{day}/{name}`, or None (-> 404) when the request is not a
        served image, escapes the files folder, or the file does not exist."""
        if not _DATE_DIR.match(day):
            return None
        if not name or name.startswith(".") or any(ch in name for ch in "/\\\0"):
            return None
        if "." not in name or name.rsplit(".", 1)[1].lower() not in SERVED_EXTENSIONS:
            return None
        root = self.files_dir.resolve()
        path = (self.files_dir / day / name).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            return None
        return path

    def _locate(self, reference: str) -> Optional[Path]:
        # Accept "<day>/<name>", "files/<day>/<name>" or a full URL ending in /files/<day>/<name>.
        tail = reference.rsplit("/files/", 1)[-1]
        if tail.startswith("files/"):
            tail = tail[len("files/"):]
        parts = tail.split("/")
        return self.resolve(parts[0], parts[1]) if len(parts) == 2 else None

    def delete(self, references: Iterable[str]) -> int:
        """Delete a finished job's files (history eviction); returns how many were removed."""
        removed = 0
        for reference in references:
            path = self._locate(reference)
            if path is None:
                continue
            path.unlink(missing_ok=True)
            removed += 1
            try:
                path.parent.rmdir()  # drop the date folder once it is empty
            except OSError:
                pass
        return removed
