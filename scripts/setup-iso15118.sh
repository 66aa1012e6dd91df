#!/usr/bin/env bash
# Create ./.iso15118-venv with the `iso15118` package (Josev) for real ISO 15118 on the wire.
# Josev pins pydantic 1.x, so it lives in its own virtual environment, apart from ./.venv
# (pydantic 2). Its wheel omits the `aiofile` dependency, so we add it. Idempotent: quick
# when already done. Called by `scripts/setup.sh --dev` and by `evfleet iso15118 setup`.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${ISO15118_VENV:-.iso15118-venv}
PYTHON=${PYTHON:-python3}
SPEC="iso15118==0.31.2 aiofile pydantic<2"
stamp="$VENV/.evfleet-iso15118-installed"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$SPEC" ] && [ -x "$VENV/bin/python" ]; then
  echo "==> $VENV is up to date ($SPEC)"
else
  if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  echo "==> installing $SPEC into $VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check iso15118==0.31.2 aiofile 'pydantic<2'
  "$VENV/bin/python" -c 'import iso15118, aiofile, pydantic; assert pydantic.VERSION.startswith("1.")'
  echo "$SPEC" > "$stamp"
fi

if ! command -v java >/dev/null 2>&1; then
  echo "warning: no 'java' on PATH; Josev's EXI codec needs Java 17 (Debian: apt-get install default-jre-headless)" >&2
fi
