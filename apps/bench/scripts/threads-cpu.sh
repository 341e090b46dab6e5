#!/usr/bin/env bash
# Server CPU per echo and echoes per second of `chinwag echo` at different
# `--threads` counts, interleaved (A B A B ...), with chinwag-bench's lock-step
# or pipelined load on the same machine. CPU time is the server process's user +
# system time from /proc over the measured seconds, divided by the echoes done
# in them, so it counts every thread's work.
#
# Usage: apps/bench/scripts/threads-cpu.sh [rounds] [connections] [size] [in flight] [seconds] [thread counts...]
#   (defaults: 5 100 1024 1 4, thread counts 1 and the machine's core count)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
source "$ROOT/tests/support/processes.sh"
ROUNDS="${1:-5}"
CONNECTIONS="${2:-100}"
SIZE="${3:-1024}"
IN_FLIGHT="${4:-1}"
SECONDS_MEASURED="${5:-4}"
shift $(( $# < 5 ? $# : 5 ))
COUNTS=("$@")
[[ ${#COUNTS[@]} -gt 0 ]] || COUNTS=(1 "$(nproc)")
BIN="$ROOT/target/release/chinwag"
BENCH="$ROOT/target/release/chinwag-bench"
TICK="$(getconf CLK_TCK)"

# The CPU time (user + system) of PID so far, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

echo "threads connections size in_flight echoes_per_s cpu_us_per_echo"
for round in $(seq "$ROUNDS"); do
  for threads in "${COUNTS[@]}"; do
    port="$(free_port)"
    "$BIN" echo --addr "127.0.0.1:$port" --threads "$threads" >"$WORK/server.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_line "$WORK/server.log" "echo server listening" >/dev/null
    # The load generator warms up for 0.5 s; the CPU is read around the rest.
    "$BENCH" load --addr "127.0.0.1:$port" --connections "$CONNECTIONS" --size "$SIZE" \
      --in-flight "$IN_FLIGHT" --seconds "$SECONDS_MEASURED" >"$WORK/load.out" &
    load=$!
    sleep 0.5
    before="$(cpu_ticks "$pid")"
    wait "$load"
    after="$(cpu_ticks "$pid")"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rate="$(awk '{ print $5 }' "$WORK/load.out" | tr -d '/s')"
    echo "$threads $CONNECTIONS $SIZE $IN_FLIGHT $rate $(awk -v a="$after" -v b="$before" -v t="$TICK" -v r="$rate" -v s="$SECONDS_MEASURED" \
      'BEGIN { printf "%.2f", (a - b) / t * 1e6 / (r * s) }')"
  done
done
