"""Input images of Fooocus jobs, kept as PNG files in the input folder.

A route decodes the client's image once and stores it here; the job's stored parameters name the
file (never the pixels, which would bloat the job database), and the workflow reads it with
ComfyUI's `LoadImage`, so a job's graph replays through POST /prompt as it is and a job that
waits across a restart still finds its image.
"""
from __future__ import annotations

import re
import uuid
from pathlib import Path

from PIL import Image

SUBFOLDER = "fooocus"
STORED_NAME = re.compile(rf"^{SUBFOLDER}/[0-9a-f]{{32}}-[a-z0-9_]+\.png$")


class InputImageStore:
    def __init__(self, input_dir: str | Path) -> None:
        self.base = Path(input_dir)

    def save(self, image: Image.Image, field: str) -> str:
        """Store `image` (RGB or L); returns its name relative to the input folder."""
        folder = self.base / SUBFOLDER
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{SUBFOLDER}/{uuid.uuid4().hex}-{field}.png"
        # fast compression: these files are read once or twice, and big inputs are common
        image.save(self.base / name, format="PNG", compress_level=1)
        return name

    def path(self, name: str) -> Path:
        base = self.base.resolve()
        path = (base / name).resolve()
        if base not in path.parents:
            raise ValueError(f"input image {name!r} is outside the input folder")
        return path

    def size(self, name: str) -> tuple[int, int]:
        """(width, height) of a stored input, read from its header."""
        with Image.open(self.path(name)) as image:
            return image.size

    def delete_job_inputs(self, params: dict) -> None:
        """Delete the stored inputs a job's parameters name (when the job itself is deleted)."""
        names = [value for value in params.values() if isinstance(value, str)]
        names += [slot.get("cn_img") for slot in params.get("image_prompts") or [] if isinstance(slot, dict)]
        self.delete(names)

    def delete(self, names) -> None:
        for name in names:
            if isinstance(name, str) and STORED_NAME.match(name):
                try:
                    self.path(name).unlink(missing_ok=True)
                except (OSError, ValueError):
                    pass
