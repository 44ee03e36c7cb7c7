#!/usr/bin/env bash
# Set up and run the whole test suite: installs the pinned requirements, Debian's chromium for the browser test
# (Playwright's own browser download cannot work offline), then lints and runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install -q -r requirements-dev.txt

if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = "0" ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    fi
fi

export GRADIO_ANALYTICS_ENABLED=False NO_PROXY=127.0.0.1,localhost HF_HUB_OFFLINE=1
python3 -m ruff check .
python3 -m ruff format --check .
# pytest exits non-zero on any failure and with code 5 when no test ran; both fail this script.
python3 -m pytest -q "$@"
