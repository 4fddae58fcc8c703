"""Runs an App with toy nodes and the toy Fooocus planner in its own process (restart tests)."""
import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web  # noqa: E402

from fooocus_toy import attach_toy_fooocus  # noqa: E402
from server.app import App  # noqa: E402
from server.config import AppConfig  # noqa: E402
from toy_nodes import NODE_CLASS_MAPPINGS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    config = AppConfig(port=args.port, models_dir=args.root / "models", output_dir=args.root / "output",
                       input_dir=args.root / "input", temp_dir=args.root / "temp", custom_nodes_dir=None)
    app = App(config, register_nodes=lambda r: r.register_mappings(NODE_CLASS_MAPPINGS, builtin=True))
    attach_toy_fooocus(app)
    web.run_app(app.make_web_app(), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
