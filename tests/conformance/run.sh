#!/usr/bin/env bash
# Runs the Autobahn test suite (every case, 1.* to 13.*, the compression cases 12.*
# and 13.* included, via the kosoku runner) against chinwag on both runtimes and in
# both roles:
#   server: kosoku drives `chinwag echo`
#   client: `chinwag client --autobahn` drives kosoku's fuzzing server
# and, server role only, the two examples that embed the core without a runtime
# (examples/blocking-echo, examples/event-loop-echo, built next to chinwag; cases
# 1.* to 10.*, as they do not offer compression),
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
# permessage-deflate for 12.* and 13.*, on both ends with chinwag's defaults (no
# context takeover), but every message compressed: kosoku fails a case when a
# message comes uncompressed on a compressed connection (its Python case code
# hashes a str), though RFC 7692 allows it; chinwag sends short and incompressible
# messages uncompressed by default.
DEFLATE=(--deflate-always)
# The compression cases with large messages (12.*.7 to 12.*.18 and the same of 13.*:
# 1000 messages of 16 KiB to 128 KiB each, lock-step) take most of the time. By
# default each runs in one role on each runtime (server on tokio, client on
# async-std), so that both roles and both runtimes see them; the other two runs
# take every other case. CONFORMANCE_FULL=1 runs every case in every run.
HEAVY=()
for suite in 12 13; do for sub in $(seq 7 18); do HEAVY+=(-x "$suite.*.$sub"); done; done
export LIGHT_RUNS="server-async-std client-tokio"
[ "${CONFORMANCE_FULL:-0}" = 1 ] && LIGHT_RUNS=""
# The kosoku arguments that select run $1's cases, into the array `selection`.
select_cases() { selection=(); case " $LIGHT_RUNS " in *" $1 "*) selection=("${HEAVY[@]}") ;; esac; }

pids=()
cleanup() { for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Up to a minute: kosoku's fuzzing server can take a while to start on a loaded
# machine (it once took more than the 10 s this allowed before).
wait_port() {
  for _ in $(seq 1 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2; return 1
}

rm -rf "$OUT"; mkdir -p "$OUT"
for runtime in tokio async-std; do
  echo "--- server role, $runtime"
  port=$(free_port)
  "$BIN" echo --addr "127.0.0.1:$port" --runtime "$runtime" "${DEFLATE[@]}" 2>"$OUT/server-$runtime.log" & pids+=($!)
  wait_port "$port"
  # kosoku exits non-zero when a case fails; the checker below says which.
  select_cases "server-$runtime"
  timeout 600 "$KOSOKU" -p 4 "${selection[@]}" -o "$OUT/server-$runtime" "127.0.0.1:$port" >"$OUT/kosoku-server-$runtime.log" 2>&1 || true
  kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

  echo "--- client role, $runtime"
  port=$(free_port)
  select_cases "client-$runtime"
  timeout 600 "$KOSOKU" -m fuzzingserver "${selection[@]}" -o "$OUT/client-$runtime" "127.0.0.1:$port" >"$OUT/kosoku-client-$runtime.log" 2>&1 & pids+=($!)
  wait_port "$port"
  timeout 600 "$BIN" client --autobahn "ws://127.0.0.1:$port" --runtime "$runtime" "${DEFLATE[@]}" 2>"$OUT/client-$runtime.log" || true
  wait "${pids[-1]}" 2>/dev/null || true
done

# The core without a runtime: the two examples that drive Connection directly.
for example in blocking-echo event-loop-echo; do
  echo "--- server role, examples/$example"
  port=$(free_port)
  "$(dirname "$BIN")/chinwag-example-$example" "127.0.0.1:$port" 2>"$OUT/server-$example.log" & pids+=($!)
  wait_port "$port"
  timeout 600 "$KOSOKU" -p 4 -x '12.*' -x '13.*' -o "$OUT/server-$example" "127.0.0.1:$port" >"$OUT/kosoku-server-$example.log" 2>&1 || true
  kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
done

"$PY" "$ROOT/tests/conformance/check.py" "$ROOT/tests/conformance/expected.json" "$OUT"
