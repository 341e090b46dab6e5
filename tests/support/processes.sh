# Shell helpers for scripts that run real processes side by side (sourced, not
# run): a work folder, processes stopped on exit, free loopback ports, and
# waiting for a log line. The shell counterpart of processes.rs.
#
# After sourcing: WORK is a fresh folder; add each background process's pid to
# PIDS (`cmd & PIDS+=($!)`); on exit they are all stopped and WORK removed.

WORK="$(mktemp -d)"
PIDS=()
stop_processes() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap stop_processes EXIT

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Waits until FILE has a line matching PATTERN (10 s at most); else prints FILE
# and fails.
wait_line() {
  for _ in $(seq 100); do grep -q -- "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "FAIL: no line matching $2 in $1:"; cat "$1"; return 1
}
