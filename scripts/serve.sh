#!/usr/bin/env bash
# Set up (first run only) and start the server. Extra arguments go to main.py (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python main.py "$@"
