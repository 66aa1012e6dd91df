#!/usr/bin/env bash
# Set up and run the closed-loop demo on an embedded Redis: `bash scripts/demo.sh [evfleet demo options]`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --demo
exec .venv/bin/evfleet demo "$@"
