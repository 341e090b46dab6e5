#!/usr/bin/env bash
# User-space instructions per echoed message of a `chinwag echo` server, counted by
# callgrind (repeatable, unlike times on a shared machine). The server runs under
# valgrind twice, loaded lock-step for a short and a long time by chinwag-bench on
# fresh servers; the difference of the instruction totals over the difference of
# the echoes cancels start-up, handshakes and warm-up.
#
# `chinwag-bench instructions` measures chinwag's servers and the one-thread
# peers this way side by side, with ratios; this script counts any one binary
# that takes an address (a peer built locally, a modified example).
#
# Usage: apps/bench/scripts/callgrind-echo.sh [chinwag binary] [size] [connections] [short s] [long s]
#   (the binary may also be target/release/chinwag-example-event-loop-echo or
#   -blocking-echo, which take the address alone; or target/release/chinwag-bench
#   with KIND=fastwebsockets-one-thread, KIND=raw-tcp-one-thread or any other
#   of its server kinds (chinwag-smol, raw-tcp-smol, ...) in the environment, to
#   measure a peer or a runtime the same way)
#   (defaults: target/release/chinwag 1024 10 2 6; chinwag-bench is taken from target/release)
#   IN_FLIGHT=K in the environment keeps K messages in flight per connection
#   (pipelined) instead of one (lock-step)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
source "$ROOT/tests/support/processes.sh"
BIN="${1:-$ROOT/target/release/chinwag}"
SIZE="${2:-1024}"
CONNECTIONS="${3:-10}"
SHORT="${4:-2}"
LONG="${5:-6}"
IN_FLIGHT="${IN_FLIGHT:-1}"
BENCH="$ROOT/target/release/chinwag-bench"
command -v valgrind >/dev/null || { echo "valgrind is missing (apt-get install valgrind)" >&2; exit 1; }

# Waits until something listens on PORT (a minute at most: valgrind starts slowly).
wait_port() {
  for _ in $(seq 600); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $1), 0.2)" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2; return 1
}

# One run: prints "instructions echoes".
run() {
  local seconds="$1" port out echoes
  port="$(free_port)"
  out="$WORK/callgrind.$seconds"
  # `chinwag echo --addr ADDR`, or an example echo server that takes ADDR alone.
  local args=(echo --addr "127.0.0.1:$port")
  case "$(basename "$BIN")" in
    chinwag) ;;
    # A peer from the bench's servers, named by KIND (fastwebsockets-one-thread,
    # raw-tcp-one-thread, ...), measured the same way.
    chinwag-bench) args=(server --kind "${KIND:?set KIND to a chinwag-bench server kind}" --addr "127.0.0.1:$port") ;;
    *) args=("127.0.0.1:$port") ;;
  esac
  valgrind --tool=callgrind --callgrind-out-file="$out" "$BIN" "${args[@]}" \
    >"$WORK/server.$seconds.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  wait_port "$port" >&2
  local raw=()
  [[ "${KIND:-}" == raw-tcp* ]] && raw=(--raw-tcp)
  echoes="$("$BENCH" load --addr "127.0.0.1:$port" --connections "$CONNECTIONS" --size "$SIZE" --seconds "$seconds" --in-flight "$IN_FLIGHT" "${raw[@]}" | awk '{print $1}')"
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  echo "$(awk '/^totals:/ {print $2}' "$out") $echoes"
}

read -r short_ir short_n < <(run "$SHORT")
read -r long_ir long_n < <(run "$LONG")
per=$(( (long_ir - short_ir) / (long_n - short_n) ))
echo "size $SIZE, $CONNECTIONS connections, $IN_FLIGHT in flight: $short_n and $long_n echoes, $short_ir and $long_ir instructions"
echo "instructions per echo: $per"
