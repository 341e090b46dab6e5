#!/usr/bin/env bash
# Runs the Autobahn test suite (every case, 1.* to 13.*, the compression cases 12.*
# and 13.* included, via the kosoku runner) against chinwag on both runtimes and in
# both roles, and in the server role on chinwag-mio's event loops too:
#   server: kosoku drives `chinwag echo`
#   client: `chinwag client --autobahn` drives kosoku's fuzzing server
# and, server role only, the two examples that embed the core without a runtime
# (examples/blocking-echo, examples/event-loop-echo, built next to chinwag; cases
# 1.* to 10.*, as they do not offer compression),
# and checks every outcome against tests/conformance/expected.json (strictly).
# Reports land in tests/out/autobahn/<role>-<runtime>/ (index.json, index.html).
# Each run says how long it took.
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
# 1000 messages of 16 KiB to 128 KiB each, lock-step) take most of the time: each
# keeps a core busy compressing. By default each runs once: the even-numbered ones
# with the server on tokio, the odd-numbered ones with the client on async-std, so
# that both roles and both runtimes see large compressed messages with every
# parameter set; the other two runs leave them out. CONFORMANCE_FULL=1 runs every
# case in every run.
HEAVY_EVEN=(); HEAVY_ODD=()
for suite in 12 13; do for sub in $(seq 7 18); do
  if [ $((sub % 2)) = 0 ]; then HEAVY_EVEN+=(-x "$suite.*.$sub"); else HEAVY_ODD+=(-x "$suite.*.$sub"); fi
done; done
# Read by check.py, which checks each run's count and that every case ran somewhere.
# HALF_RUNS: the first takes the even-numbered heavy cases, the second the odd.
export LIGHT_RUNS="server-async-std client-tokio server-event-loop" HALF_RUNS="server-tokio client-async-std"
[ "${CONFORMANCE_FULL:-0}" = 1 ] && LIGHT_RUNS="" && HALF_RUNS=""
# The kosoku arguments that select run $1's cases, into the array `selection`.
select_cases() {
  selection=()
  local halves=($HALF_RUNS)
  case "$1" in
    # The examples do not offer compression.
    *-echo) selection=(-x '12.*' -x '13.*') ;;
    "${halves[0]:-}") selection=("${HEAVY_ODD[@]}") ;;
    "${halves[1]:-}") selection=("${HEAVY_EVEN[@]}") ;;
    *) case " $LIGHT_RUNS " in *" $1 "*) selection=("${HEAVY_EVEN[@]}" "${HEAVY_ODD[@]}") ;; esac ;;
  esac
}

# Whatever this script started (servers, kosoku, clients) is stopped as it
# exits, however it exits.
kill_tree() { local child; for child in $(pgrep -P "$1"); do kill_tree "$child"; done; kill "$1" 2>/dev/null || true; }
cleanup() { local child; for child in $(pgrep -P $$); do kill_tree "$child"; done; }
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

# One run each, with its own ports, processes and report directory.
server_run() { # server_run NAME COMMAND... : kosoku drives the server COMMAND starts
  local name="$1"; shift
  local port; port=$(free_port)
  "$@" "127.0.0.1:$port" 2>"$OUT/server-$name.log" &
  local server=$!
  wait_port "$port" || { kill "$server" 2>/dev/null; return 1; }
  # kosoku exits non-zero when a case fails; the checker below says which.
  select_cases "server-$name"
  timeout 600 "$KOSOKU" -p 4 "${selection[@]}" -o "$OUT/server-$name" "127.0.0.1:$port" >"$OUT/kosoku-server-$name.log" 2>&1 || true
  kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true
}
client_run() { # client_run RUNTIME : chinwag's client drives kosoku's fuzzing server
  local runtime="$1"
  local port; port=$(free_port)
  select_cases "client-$runtime"
  timeout 600 "$KOSOKU" -m fuzzingserver "${selection[@]}" -o "$OUT/client-$runtime" "127.0.0.1:$port" >"$OUT/kosoku-client-$runtime.log" 2>&1 &
  local fuzzing=$!
  wait_port "$port" || { kill "$fuzzing" 2>/dev/null; return 1; }
  timeout 600 "$BIN" client --autobahn "ws://127.0.0.1:$port" --runtime "$runtime" "${DEFLATE[@]}" 2>"$OUT/client-$runtime.log" || true
  wait "$fuzzing" 2>/dev/null || true
}
timed() { # timed LABEL COMMAND... : runs it and says how long it took
  local label="$1" started=$SECONDS; shift
  "$@"
  echo "--- $label: $((SECONDS - started)) s"
}

rm -rf "$OUT"; mkdir -p "$OUT"
EXAMPLES="$(dirname "$BIN")/chinwag-example"
# One after the other: a run with heavy cases keeps both cores busy (kosoku and the
# server compressing); two side by side took longer than in turn (513 s against
# about 405 s for all six).
timed "server role, tokio" server_run tokio "$BIN" echo --runtime tokio "${DEFLATE[@]}" --addr
timed "client role, tokio" client_run tokio
timed "server role, async-std" server_run async-std "$BIN" echo --runtime async-std "${DEFLATE[@]}" --addr
timed "client role, async-std" client_run async-std
# `chinwag echo`'s default: chinwag-mio's event loops.
timed "server role, event loops" server_run event-loop "$BIN" echo --runtime event-loop "${DEFLATE[@]}" --addr
# The core without a runtime: the two examples that drive Connection directly.
timed "server role, examples/blocking-echo" server_run blocking-echo "$EXAMPLES-blocking-echo"
timed "server role, examples/event-loop-echo" server_run event-loop-echo "$EXAMPLES-event-loop-echo"

"$PY" "$ROOT/tests/conformance/check.py" "$ROOT/tests/conformance/expected.json" "$OUT"
