#!/usr/bin/env bash
# The README's two-node example, command for command, on free loopback ports: a
# redis-server, two `chinwag gateway` nodes, the Python example handler, and
# `chinwag client`s. Checks that a "tell" from bob on node 2 reaches alex on node 1,
# and not alex in another namespace. Everything it starts is stopped on exit.
#
# Usage: tests/gateway/two_nodes.sh PATH/TO/chinwag PATH/TO/python
set -euo pipefail
CHINWAG="$1"
PY="$2"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
source tests/support/processes.sh
fail() { echo "FAIL: $*"; for f in "$WORK"/*.log "$WORK"/*.out; do echo "--- $f"; cat "$f"; done; exit 1; }

REDIS_PORT="$(free_port)"; NODE1="127.0.0.1:$(free_port)"; NODE2="127.0.0.1:$(free_port)"
# Each node has an admin listener of its own (metrics, health, readiness).
ADMIN1="127.0.0.1:$(free_port)"; ADMIN2="127.0.0.1:$(free_port)"; ADMIN3="127.0.0.1:$(free_port)"
BUS="redis://127.0.0.1:$REDIS_PORT"

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" >"$WORK/redis.log" 2>&1 & PIDS+=($!)
wait_line "$WORK/redis.log" "Ready to accept connections"
"$CHINWAG" gateway --config conf/socket.dev.yaml --bus "$BUS" --listen "$NODE1" --admin-addr "$ADMIN1" >"$WORK/node1.log" 2>&1 & PIDS+=($!)
"$CHINWAG" gateway --config conf/socket.dev.yaml --bus "$BUS" --listen "$NODE2" --admin-addr "$ADMIN2" >"$WORK/node2.log" 2>&1 & PIDS+=($!)
"$PY" examples/gateway-handler/handler.py --redis "$BUS" >"$WORK/handler.out" 2>"$WORK/handler.log" & PIDS+=($!)
wait_line "$WORK/node1.log" "subscribed on Redis"
wait_line "$WORK/node2.log" "subscribed on Redis"
wait_line "$WORK/handler.out" "^ready"
for admin in "$ADMIN1" "$ADMIN2"; do
  ready="$("$PY" -c "import sys, urllib.request; print(urllib.request.urlopen(f'http://{sys.argv[1]}/ready').read().decode())" "$admin")"
  case "$ready" in "ready: serving; bus: connected to Redis"*) ;; *) fail "node with admin $admin: /ready says: $ready";; esac
done

# Clients keep their input open (a FIFO each) until the check is done.
mkfifo "$WORK/alex.in" "$WORK/alex2.in" "$WORK/bob.in"
"$CHINWAG" client "ws://$NODE1/connect?namespace=acme&username=alex" <"$WORK/alex.in" >"$WORK/alex.out" 2>&1 & PIDS+=($!)
exec 3>"$WORK/alex.in"
"$CHINWAG" client "ws://$NODE2/connect?namespace=other&username=alex" <"$WORK/alex2.in" >"$WORK/alex2.out" 2>&1 & PIDS+=($!)
exec 4>"$WORK/alex2.in"
"$CHINWAG" client "ws://$NODE2/connect?namespace=acme&username=bob" <"$WORK/bob.in" >"$WORK/bob.out" 2>&1 & PIDS+=($!)
exec 5>"$WORK/bob.in"
wait_line "$WORK/alex.out" '"hello":"alex"' || fail "alex got no onconnect reply"
wait_line "$WORK/alex2.out" '"hello":"alex"' || fail "alex (other) got no onconnect reply"
wait_line "$WORK/bob.out" '"hello":"bob"' || fail "bob got no onconnect reply"

echo '{"type":"tell","payload":{"to":"alex","text":"hi"}}' >&5
wait_line "$WORK/alex.out" '{"payload":{"from":"bob","text":"hi"},"type":"told"}' || fail "alex never got bob's message"
echo '{"type":"announce","payload":{"text":"acme only"}}' >&5
wait_line "$WORK/alex.out" '"announcement"' || fail "alex never got the announcement"
# A broadcast to everyone, published last: once alex in "other" has it, anything
# meant for acme would have reached that connection before it.
redis-cli -p "$REDIS_PORT" publish socket:broadcast '{"type":"fence"}' >/dev/null
wait_line "$WORK/alex2.out" '"fence"' || fail "alex (other) never got the broadcast to all"
if grep -q '"told"\|"announcement"' "$WORK/alex2.out"; then fail "a message crossed namespaces"; fi
exec 3>&- 4>&- 5>&-
echo "two nodes: a send crossed nodes within its namespace, and nothing crossed namespaces"

# A third node with JWT users (conf/socket.yaml), as the README runs it: a token
# from `chinwag token` is accepted, no token is refused with 401.
export GATEWAY_JWT_SECRET="$(head -c 32 /dev/urandom | base64)"
NODE3="127.0.0.1:$(free_port)"
"$CHINWAG" gateway --config conf/socket.yaml --bus "$BUS" --listen "$NODE3" --admin-addr "$ADMIN3" >"$WORK/node3.log" 2>&1 & PIDS+=($!)
NODE3_PID=$!
wait_line "$WORK/node3.log" "subscribed on Redis"
TOKEN="$("$CHINWAG" token --config conf/socket.yaml --username carol --namespace acme)"
mkfifo "$WORK/carol.in"
"$CHINWAG" client --header "Cookie: ID_TOKEN=$TOKEN" "ws://$NODE3/connect?namespace=acme" \
  <"$WORK/carol.in" >"$WORK/carol.out" 2>&1 & PIDS+=($!)
exec 6>"$WORK/carol.in"
wait_line "$WORK/carol.out" '"hello":"carol"' || fail "carol's token was not accepted"
exec 6>&-
if "$CHINWAG" client "ws://$NODE3/connect?namespace=acme&username=carol" </dev/null >"$WORK/anonymous.out" 2>&1; then
  fail "a client without a token was let in"
fi
grep -q "401" "$WORK/anonymous.out" || fail "no 401 for a client without a token"
# conf/socket.yaml reads the namespaces claim: carol's token allows acme only.
if "$CHINWAG" client --header "Cookie: ID_TOKEN=$TOKEN" "ws://$NODE3/connect?namespace=globex" \
  </dev/null >"$WORK/globex.out" 2>&1; then
  fail "carol joined a namespace her token does not allow"
fi
grep -q "403" "$WORK/globex.out" || fail "no 403 for a namespace the token does not allow"
# SIGHUP reloads the keys and does not stop the node.
kill -HUP "$NODE3_PID"
# (The first "JWT keys loaded" line is the start's.)
for _ in $(seq 50); do [ "$(grep -c "JWT keys loaded" "$WORK/node3.log")" -ge 2 ] && break; sleep 0.1; done
[ "$(grep -c "JWT keys loaded" "$WORK/node3.log")" -ge 2 ] || fail "SIGHUP did not reload the keys"
sleep 0.5
kill -0 "$NODE3_PID" 2>/dev/null || fail "SIGHUP stopped the node"
echo "JWT node: a token from chinwag token was accepted for its namespace, refused (403) for another; no token got 401; SIGHUP reloaded the keys"
