"""ComfyUI's `comfy.cli_args.args`, answered from the bound App's config where a flag of ours means the same."""
from __future__ import annotations

import enum

from comfy_compat import bound, missing_attribute, not_provided

__getattr__ = missing_attribute("comfy.cli_args")


class LatentPreviewMethod(str, enum.Enum):
    NoPreviews = "none"
    Auto = "auto"
    Latent2RGB = "latent2rgb"
    TAESD = "taesd"


class _Args:
    """Each attribute read from the config on access (packs keep `args` from import time)."""

    _FLAGS = {
        "cpu": lambda c: c.cpu,
        "listen": lambda c: c.host,
        "port": lambda c: c.port,
        "output_directory": lambda c: str(c.output_dir),
        "input_directory": lambda c: str(c.input_dir),
        "temp_directory": lambda c: str(c.temp_dir),
        "preview_method": lambda c: LatentPreviewMethod(c.preview_method),
        "preview_size": lambda c: c.preview_size,
        "max_upload_size": lambda c: c.max_upload_size_mb,
        "force_fp32": lambda c: c.precision == "fp32",
        "force_fp16": lambda c: c.precision == "fp16",
        "bf16_unet": lambda c: c.precision == "bf16",
        "disable_metadata": lambda c: False,
        "disable_all_custom_nodes": lambda c: c.custom_nodes_dir is None,
        "verbose": lambda c: c.log_level.upper(),
    }

    def __getattr__(self, name: str):
        if name in self._FLAGS:
            return self._FLAGS[name](bound(f"comfy.cli_args.args.{name}").config)
        if name.startswith("__"):
            raise AttributeError(name)
        raise not_provided(f"comfy.cli_args.args.{name}", "no flag of ours means the same")


args = _Args()
