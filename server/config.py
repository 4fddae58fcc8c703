"""The server's settings: one frozen object built from the command line (or by tests)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class AppConfig:
    host: str = "127.0.0.1"
    port: int = 8888
    base_url: str | None = None  # prefix of returned URLs; default http://host:port
    models_dir: Path = Path("models_data")
    output_dir: Path = Path("output")
    input_dir: Path = Path("input")
    temp_dir: Path = Path("temp")
    user_dir: Path = Path("user")  # the web UI's per-user settings and files (ComfyUI's --user-directory)
    custom_nodes_dir: Path | None = Path("custom_nodes")
    # custom-node packs may run package installs (pip, uv, conda); refused by default (comfy_compat/install_guard.py)
    allow_custom_node_installs: bool = False
    cache: str = "classic"  # "classic" or "lru:N"
    cpu: bool = False
    precision: str = "auto"  # auto | fp32 | fp16 | bf16
    log_level: str = "info"
    max_upload_size_mb: float = 100.0
    preview_size: int = 512
    # ComfyUI's --preview-method: sampler step previews on the websocket (none | auto | latent2rgb | taesd)
    preview_method: str = "none"
    max_history: int = 10_000  # ComfyUI's cap on the in-memory /history (oldest evicted first)
    # Fooocus-API
    preset: str | None = None
    default_model: str | None = None
    queue_size: int = 100
    queue_history: int = 0  # 0 = keep every finished job
    webhook_url: str | None = None
    apikey: str | None = None
    allow_private_urls: bool = False  # image URLs of requests may point to loopback/private addresses
    url_fetch_timeout_s: float = 20.0  # total time for fetching one image URL of a request
    database: Path | None = None  # SQLite job store; default <output_dir>/jobs.sqlite3
    demo_models: bool = True  # serve tiny random models when the models folder has no checkpoint
    # existing installs listed after models_dir (server/model_paths.py): ComfyUI extra_model_paths.yaml
    # files, Fooocus models folders, ComfyUI models folders
    extra_model_paths: tuple[Path, ...] = ()
    fooocus_models: tuple[Path, ...] = ()
    comfyui_models: tuple[Path, ...] = ()
    # fetch missing model files (server/downloads/): the command line turns this on, as Fooocus does;
    # off for an App built in code, so tests and embedders never reach the network unasked
    download: bool = False
    download_all: bool = False  # at start, also every capability's files (not only the preset's)
    extra: dict = field(default_factory=dict)

    @property
    def public_base_url(self) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"
