#!/usr/bin/env bash
# Throughput of the gateway's Redis bus: one `chinwag gateway` node on a
# redis-server of its own (free loopback ports, nothing persisted), one
# `chinwag client` piping N messages in as fast as it can, and a `redis-cli`
# subscriber counting the events that reach Redis. Prints events per second end
# to end and how many the node dropped (the outbox's counter, from its log).
#
# Usage: apps/bench/scripts/gateway-bus.sh [N] [PATH/TO/chinwag]   (N: 200000)
set -euo pipefail
N="${1:-200000}"
CHINWAG="${2:-target/release/chinwag}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cd "$ROOT"
source tests/support/processes.sh

REDIS_PORT="$(free_port)"; NODE="127.0.0.1:$(free_port)"
# The development config, without the per-connection rate limit (one client sends everything).
sed 's/^  bus: .*/  bus: "in-process"\n  limits: { message_rate: 0 }/' conf/socket.dev.yaml >"$WORK/gateway.yaml"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" >"$WORK/redis.log" 2>&1 & PIDS+=($!)
wait_line "$WORK/redis.log" "Ready to accept connections"
"$CHINWAG" gateway --config "$WORK/gateway.yaml" --bus "redis://127.0.0.1:$REDIS_PORT" --listen "$NODE" --admin-addr off \
  >"$WORK/node.log" 2>&1 & PIDS+=($!)
wait_line "$WORK/node.log" "subscribed on Redis"
redis-cli -p "$REDIS_PORT" subscribe socket:generalMessage >"$WORK/events" & PIDS+=($!)
wait_line "$WORK/events" "socket:generalMessage"
python3 -c "
import sys
sys.stdout.writelines('{\"type\":\"bench\",\"payload\":%d}\n' % i for i in range($N))" >"$WORK/lines"

# The client's input stays open (a FIFO held by fd 3) until the count is done.
mkfifo "$WORK/input"
"$CHINWAG" client "ws://$NODE/connect?namespace=acme&username=bench" <"$WORK/input" >"$WORK/client.out" 2>&1 &
PIDS+=($!)
exec 3>"$WORK/input"
start=$(date +%s.%N)
cat "$WORK/lines" >&3
seen=0
for _ in $(seq 1200); do   # 60 s at most
  seen=$(( $(wc -l <"$WORK/events") / 3 - 1 ))
  [ "$seen" -ge "$N" ] && break
  sleep 0.05
done
end=$(date +%s.%N)
exec 3>&-
dropped="$(grep -o 'dropped=[0-9]*' "$WORK/node.log" | tail -1 | cut -d= -f2 || true)"
python3 -c "
n, seen, secs = $N, $seen, $end - $start
print(f'gateway Redis bus: {seen} of {n} events on Redis in {secs:.2f} s: {seen / secs:,.0f} events/s; dropped by the node: ${dropped:-0}')"
[ "$seen" -ge "$N" ]
