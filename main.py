"""Command line: parse flags -> build the App -> serve."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="main.py",
        description="A Fooocus-API compatible SDXL server on a ComfyUI-style node graph. "
                    "Serves the Fooocus API (/v1, /v2) and the ComfyUI API (/prompt, /ws, ...) on one port.")
    net = parser.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    net.add_argument("--port", type=int, default=8888, help="listen port (default 8888)")
    net.add_argument("--base-url", default=None, help="prefix of the image URLs the API returns "
                                                      "(default http://HOST:PORT)")
    paths = parser.add_argument_group("folders")
    paths.add_argument("--models-dir", type=Path, default=Path("models_data"),
                       help="root of the model folders: checkpoints/, loras/, vae/, ... (default ./models_data)")
    paths.add_argument("--output-dir", type=Path, default=Path("output"), help="generated images (default ./output)")
    paths.add_argument("--input-dir", type=Path, default=Path("input"), help="uploaded images (default ./input)")
    paths.add_argument("--temp-dir", type=Path, default=Path("temp"), help="previews (default ./temp)")
    paths.add_argument("--user-dir", type=Path, default=Path("user"),
                       help="the web UI's settings and saved workflows, one folder per user (default ./user)")
    paths.add_argument("--custom-nodes-dir", type=Path, default=Path("custom_nodes"),
                       help="folder of custom node packs loaded at start (default ./custom_nodes)")
    paths.add_argument("--allow-custom-node-installs", action="store_true",
                       help="let custom node packs run pip/uv/conda installs (refused by default)")
    engine = parser.add_argument_group("engine")
    engine.add_argument("--cache", default="classic", metavar="classic|lru:N",
                        help="node output cache: 'classic' keeps what the current workflow can reuse; "
                             "'lru:N' keeps the N most recent outputs across workflows (default classic)")
    engine.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is present")
    engine.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"], default="auto",
                        help="compute precision on CUDA (default auto: fp16; fp32 on the CPU always)")
    engine.add_argument("--preview-size", type=int, default=512, help="largest side of step previews (default 512)")
    engine.add_argument("--preview-method", choices=["none", "auto", "latent2rgb", "taesd"], default="none",
                        help="sampler step previews sent to websocket clients, as ComfyUI's flag: none (default), "
                             "auto or latent2rgb (a linear latent-to-RGB map), taesd (TAESD from vae_approx/, "
                             "else the linear map); a prompt may choose its own in extra_data.preview_method. "
                             "Fooocus' require_step_preview works under every value")
    engine.add_argument("--max-history", type=_positive_int, default=10_000, metavar="N",
                        help="finished prompts kept in the in-memory ComfyUI /history, oldest dropped first "
                             "(default 10000, as ComfyUI); the Fooocus job store keeps every job")
    engine.add_argument("--no-demo-models", action="store_true",
                        help="do not write tiny random demo models when the models folder has no checkpoint")
    files = parser.add_argument_group("model files")
    files.add_argument("--extra-model-paths", type=Path, action="append", default=[], metavar="FILE",
                       help="a ComfyUI extra_model_paths.yaml whose folders are listed after --models-dir "
                            "(repeatable)")
    files.add_argument("--fooocus-models", type=Path, action="append", default=[], metavar="DIR",
                       help="an existing Fooocus models folder (or Fooocus install) to use as it is (repeatable)")
    files.add_argument("--comfyui-models", type=Path, action="append", default=[], metavar="DIR",
                       help="an existing ComfyUI models folder (or ComfyUI install) to use as it is (repeatable)")
    files.add_argument("--no-download", action="store_true",
                       help="never fetch model files: a missing file is a job error (demo models when no "
                            "checkpoint exists)")
    files.add_argument("--download-only", action="store_true",
                       help="fetch the preset's model files (and --download-all's) into --models-dir, then exit")
    files.add_argument("--download-all", action="store_true",
                       help="at start, also fetch every capability's files (upscaler, inpaint, image prompt, "
                            "describe, previews, ...) instead of on first use")
    fooocus = parser.add_argument_group("Fooocus API")
    fooocus.add_argument("--preset", default=None, help="Fooocus preset name (default: 'default')")
    fooocus.add_argument("--default-model", default=None, help="base model used when a request names none")
    fooocus.add_argument("--queue-size", type=int, default=100, help="most jobs waiting + running (default 100)")
    fooocus.add_argument("--queue-history", type=int, default=0,
                         help="finished jobs kept; older ones and their files are deleted (default 0 = all)")
    fooocus.add_argument("--webhook-url", default=None, help="URL notified when any job finishes")
    fooocus.add_argument("--apikey", default=None, help="require this X-API-KEY header on every API route")
    fooocus.add_argument("--allow-private-urls", action="store_true",
                         help="let image URLs in requests point to loopback, private or link-local addresses "
                              "(refused by default)")
    fooocus.add_argument("--url-fetch-timeout", type=float, default=20.0,
                         help="seconds allowed for fetching one image URL of a request (default 20)")
    fooocus.add_argument("--persistent", action="store_true",
                         help="accepted for Fooocus-API compatibility: history is always persisted")
    fooocus.add_argument("--database", type=Path, default=None,
                         help="SQLite file of the job store (default OUTPUT_DIR/jobs.sqlite3)")
    fooocus.add_argument("--max-upload-size", type=float, default=100.0, help="largest request body in MB (default 100)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                        help="log level (default info)")
    parser.add_argument("--make-demo-models", type=Path, metavar="DIR", default=None,
                        help="write tiny random-weight demo checkpoints, LoRA, tokenizer and expansion model "
                             "into DIR and exit")
    return parser


def config_from_args(args: argparse.Namespace):
    from server.config import AppConfig

    return AppConfig(host=args.host, port=args.port, base_url=args.base_url, models_dir=args.models_dir,
                     output_dir=args.output_dir, input_dir=args.input_dir, temp_dir=args.temp_dir,
                     user_dir=args.user_dir,
                     custom_nodes_dir=args.custom_nodes_dir, cache=args.cache, cpu=args.cpu,
                     allow_custom_node_installs=args.allow_custom_node_installs,
                     precision=args.precision, log_level=args.log_level, max_upload_size_mb=args.max_upload_size,
                     preview_size=args.preview_size, preview_method=args.preview_method,
                     max_history=args.max_history, preset=args.preset, default_model=args.default_model,
                     queue_size=args.queue_size, queue_history=args.queue_history, webhook_url=args.webhook_url,
                     apikey=args.apikey, allow_private_urls=args.allow_private_urls,
                     url_fetch_timeout_s=args.url_fetch_timeout, database=args.database,
                     demo_models=not args.no_demo_models, extra_model_paths=tuple(args.extra_model_paths),
                     fooocus_models=tuple(args.fooocus_models), comfyui_models=tuple(args.comfyui_models),
                     download=not args.no_download, download_all=args.download_all)


def download_only(config) -> int:
    """--download-only: fetch what a start would fetch, report, exit (1 when a file failed)."""
    from server.downloads.startup import startup_downloads

    report = startup_downloads(config)
    for path in report.fetched:
        print(f"fetched {path}")
    for failure in report.failed:
        print(f"FAILED {failure}", file=sys.stderr)
    print(f"{len(report.fetched)} file(s) fetched, {len(report.failed)} failed; models in {config.models_dir}")
    return 1 if report.failed else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.make_demo_models is not None:
        from server.demo import write_demo_models

        write_demo_models(args.make_demo_models)
        print(f"demo models written to {args.make_demo_models}")
        return 0
    try:
        from graph.cache import make_cache

        make_cache(args.cache)
    except ValueError as exc:
        build_parser().error(str(exc))
    if args.no_download and args.download_only:
        build_parser().error("--download-only cannot be combined with --no-download")
    config = config_from_args(args)
    from server.model_paths import ModelPathsError, extra_roots_from_config

    try:
        extra_roots_from_config(config)  # a bad --extra-model-paths file is a usage error, before any work
    except ModelPathsError as exc:
        build_parser().error(str(exc))
    if args.download_only:
        return download_only(config)
    from server.serve import serve

    return serve(config)


if __name__ == "__main__":
    sys.exit(main())
