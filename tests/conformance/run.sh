#!/usr/bin/env bash
# Runs the Autobahn test suite (cases 1.* to 10.*, via the kosoku runner) against
# chinwag on both runtimes and in both roles:
#   server: kosoku drives `chinwag echo`
#   client: `chinwag client --autobahn` drives kosoku's fuzzing server
# and, server role only, the two examples that embed the core without a runtime
# (examples/blocking-echo, examples/event-loop-echo, built next to chinwag),
# and checks every outcome against tests/conformance/expected.json (strictly).
# Reports land in tests/out/autobahn/<role>-<runtime>/ (index.json, index.html).
#
# Usage: tests/conformance/run.sh [path/to/chinwag]   (default: target/release/chinwag)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="${1:-$ROOT/target/release/chinwag}"
OUT="$ROOT/tests/out/autobahn"
PY="$("$ROOT/tests/setup-python.sh")"
KOSOKU="$(dirname "$PY")/kosoku"
CASES=(-x '12.*' -x '13.*')   # compression cases belong to a later issue

pids=()
cleanup() { for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 100); do
    "$PY" -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),0.2)" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2; return 1
}

rm -rf "$OUT"; mkdir -p "$OUT"
for runtime in tokio async-std; do
  echo "--- server role, $runtime"
  port=$(free_port)
  "$BIN" echo --addr "127.0.0.1:$port" --runtime "$runtime" 2>"$OUT/server-$runtime.log" & pids+=($!)
  wait_port "$port"
  # kosoku exits non-zero when a case fails; the checker below says which.
  timeout 600 "$KOSOKU" -p 2 "${CASES[@]}" -o "$OUT/server-$runtime" "127.0.0.1:$port" >"$OUT/kosoku-server-$runtime.log" 2>&1 || true
  kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

  echo "--- client role, $runtime"
  port=$(free_port)
  timeout 600 "$KOSOKU" -m fuzzingserver "${CASES[@]}" -o "$OUT/client-$runtime" "127.0.0.1:$port" >"$OUT/kosoku-client-$runtime.log" 2>&1 & pids+=($!)
  wait_port "$port"
  timeout 600 "$BIN" client --autobahn "ws://127.0.0.1:$port" --runtime "$runtime" 2>"$OUT/client-$runtime.log" || true
  wait "${pids[-1]}" 2>/dev/null || true
done

# The core without a runtime: the two examples that drive Connection directly.
for example in blocking-echo event-loop-echo; do
  echo "--- server role, examples/$example"
  port=$(free_port)
  "$(dirname "$BIN")/chinwag-example-$example" "127.0.0.1:$port" 2>"$OUT/server-$example.log" & pids+=($!)
  wait_port "$port"
  timeout 600 "$KOSOKU" -p 2 "${CASES[@]}" -o "$OUT/server-$example" "127.0.0.1:$port" >"$OUT/kosoku-server-$example.log" 2>&1 || true
  kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
done

"$PY" "$ROOT/tests/conformance/check.py" "$ROOT/tests/conformance/expected.json" "$OUT"
