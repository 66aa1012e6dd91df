#!/usr/bin/env bash
# Set up evfleet in ./.venv. `--demo` adds the demo's chart (matplotlib); `--dev` also installs
# the test tools and the system packages the test suite drives for real (Chromium, Mosquitto,
# Java, iproute2, HAProxy).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "evfleet needs Python 3.11 or newer (found $("$PYTHON" --version 2>&1))" >&2
  exit 1
fi

side_pids=()  # background installs (--dev); stopped if setup fails before waiting for them
trap 'for pid in "${side_pids[@]}"; do kill "$pid" 2>/dev/null || true; done' EXIT

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PYTHON" -m venv .venv
fi
if [ "${1:-}" = "--dev" ]; then
  need=()
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
  command -v java >/dev/null 2>&1 || need+=(default-jre-headless)
  command -v ip >/dev/null 2>&1 || need+=(iproute2)
  command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
  if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "==> installing system packages: ${need[*]}"
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    else
      echo "warning: missing ${need[*]}; install them (Debian: apt-get install ${need[*]}) or the tests that need them are skipped" >&2
    fi
  fi
  # The two side installs below are independent of .venv and mostly wait on the network: they run
  # in the background while pip installs evfleet, and are waited for (their failure fails setup).
  # the independent OCPP 2.0.1 test station (npm ocpp-rpc, strict mode): tests/thirdparty
  rpc=tests/thirdparty/ocpp-rpc
  if command -v npm >/dev/null 2>&1; then
    if [ ! -f "$rpc/node_modules/.package-lock.json" ] || [ "$rpc/package-lock.json" -nt "$rpc/node_modules/.package-lock.json" ]; then
      echo "==> installing the ocpp-rpc test station (npm ci, in the background)"
      (cd "$rpc" && npm ci --no-audit --no-fund --loglevel=error) &
      side_pids+=($!)
    fi
  else
    echo "warning: node/npm missing (Node 18+); the ocpp-rpc station test is skipped" >&2
  fi
  if [ -x scripts/setup-iso15118.sh ]; then
    bash scripts/setup-iso15118.sh &
    side_pids+=($!)
  fi
fi

extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"
[ "${1:-}" = "--demo" ] && extras="[demo]"  # matplotlib for the demo's chart
stamp=".venv/.evfleet-installed${extras}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "==> installing evfleet${extras} into .venv"
  # the venv's own pip (Python 3.11's, >= 22.3) installs editable pyproject projects: not upgraded
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extras}"
  touch "$stamp"
fi

for pid in "${side_pids[@]}"; do
  wait "$pid"  # set -e: a failed side install fails setup
done
side_pids=()
