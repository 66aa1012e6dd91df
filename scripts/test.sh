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
# The tests run on 2 pytest-xdist workers, each test file whole on one worker (its module fixtures
# start once), then the tests marked `alone` (tests/conftest.py ALONE: CPU-heavy, timing-sensitive) one
# at a time. On the 2-core reference machine, from a fresh clone: 4:50 + 7:18 against about 15 min in
# one process. EVFLEET_TEST_WORKERS=1 runs everything in one process, in order.
workers=${EVFLEET_TEST_WORKERS:-2}
if [ "$workers" -gt 1 ]; then
  status=0
  echo "==> pytest ($workers workers, the tests not marked alone)"
  .venv/bin/python -m pytest -n "$workers" --dist loadfile -m "not soak and not alone" "$@" || status=$?
  [ "$status" -eq 5 ] && status=0  # no test selected here: the arguments named only alone ones
  echo "==> pytest (the tests marked alone, one at a time)"
  .venv/bin/python -m pytest -m "alone and not soak" "$@" || { s=$?; [ "$s" -eq 5 ] || status=$s; }
  exit "$status"
else
  echo "==> pytest"
  .venv/bin/python -m pytest "$@"
fi
