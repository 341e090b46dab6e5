#!/usr/bin/env bash
# Creates (once) the Python venv the test suites use, at tests/.venv, and prints its
# python path. Idempotent; safe to source from other scripts.
set -euo pipefail
TESTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$TESTS/.venv"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import kosoku' 2>/dev/null \
   || ! cmp -s "$TESTS/requirements.txt" "$VENV/.requirements" 2>/dev/null; then
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    echo "installing python3-venv" >&2
    sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq >&2 && $sudo_cmd apt-get install -y -qq python3-venv >&2
  fi
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$TESTS/requirements.txt" >&2
  cp "$TESTS/requirements.txt" "$VENV/.requirements"
fi
echo "$VENV/bin/python"
