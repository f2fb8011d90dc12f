#!/usr/bin/env bash
# Quick start: install what is missing, then run the server on the embedded Piper voice.
# Extra arguments go to `voxwire serve` (e.g. --host 0.0.0.0 --port 8765).
source "$(dirname "$0")/common.sh"
apt_need libopus0 python3-venv
venv_install "."
exec "$VENV/bin/voxwire" serve "$@"
