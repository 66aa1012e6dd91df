#!/usr/bin/env bash
# Set up (with test tools) and run the whole test suite: lint, types, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
echo "==> ruff"
.venv/bin/ruff check .
echo "==> mypy"
.venv/bin/mypy
echo "==> lint-imports (package arrows: pyproject.toml, docs/architecture.md)"
.venv/bin/lint-imports
echo "==> pytest"
.venv/bin/python -m pytest "$@"
