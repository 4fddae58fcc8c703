#!/usr/bin/env bash
# Set up (first run only) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh test
# the web UI test drives the distribution's chromium; install it when missing and we may
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1 \
        && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
        || echo "scripts/test.sh: could not install chromium; tests/test_web_ui.py will fail and say so" >&2
fi
# two worker processes (pytest-xdist), one torch thread each (tests/conftest.py): on the 2-core
# machines the suite is written for that halves its time against one process; `-n N` overrides
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n 2 "$@"
