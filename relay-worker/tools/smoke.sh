#!/usr/bin/env bash
# Smoke test for relay-worker without nginx: two relays ("a", "b") on free
# loopback ports talk gRPC to each other; relay-cli plays the nginx workers.
#
#   bash relay-worker/tools/smoke.sh            # uses build/bin/relay-worker
#   RELAY=/path/to/asan/relay-worker bash relay-worker/tools/smoke.sh
#   KAFKA=127.0.0.1:19092 TOPIC=t MYSQL=127.0.0.1:13306 bash relay-worker/tools/smoke.sh
#
# Without KAFKA the relays point at a closed port: deliveries still work and
# Kafka failures are only logged.  Without MYSQL, create_room must answer
# "unavailable".  Checks: cross-node and local fan-out in order with no loss,
# a peer that comes up late gets the backlog in order, malformed and oversize
# frames close only their connection, a worker that stops reading is dropped
# at its bound, SIGTERM exits 0, and no sanitizer report appears in the logs.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
RELAY=${RELAY:-$top/build/bin/relay-worker}
CLI=$top/build/bin/relay-cli
W=$(mktemp -d /tmp/relay-smoke.XXXXXX)
fails=0
pids=()

cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
    wait 2>/dev/null
}
trap cleanup EXIT

ok()   { echo "ok   $*"; }
bad()  { echo "FAIL $*"; fails=$((fails + 1)); }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cc -O2 -g -Wall -Wextra -Werror -std=gnu11 -D_GNU_SOURCE -I"$top/lib/include" -I"$top/build/gen" \
    -o "$CLI" "$top/relay-worker/tools/relay-cli.c" "$top/build/libminichat.a" -lprotobuf-c || exit 1

pa=$(free_port); pb=$(free_port)
conf() { # node port peer peer_port outbuf_mb
    cat > "$W/$1.conf" <<EOF
node = $1
unix_socket = $W/$1.sock
grpc_listen = 127.0.0.1:$2
peers = $3@127.0.0.1:$4
kafka_brokers = ${KAFKA:-127.0.0.1:1}
kafka_topic = ${TOPIC:-minichat.smoke}
mysql_primary = ${MYSQL:-}
local_outbuf_max_mb = $5
peer_timeout_ms = 2000
EOF
}
start() { # node -> pid in $started
    "$RELAY" -c "$W/$1.conf" >> "$W/$1.log" 2>&1 &
    started=$!
    pids+=("$started")
    for _ in $(seq 100); do [ -S "$W/$1.sock" ] && return 0; sleep 0.05; done
    bad "relay $1 did not create its socket"; return 1
}
conf a "$pa" b "$pb" 64
conf b "$pb" a "$pa" 1

# 1. peer b is down: a queues, then b comes up and gets the backlog in order
start a; A=$started
"$CLI" bench "$W/a.sock" "$W/a.sock" -n 2000 -r 2000 -R 5 > "$W/bench0.txt" 2>&1 || bad "local fan-out with the peer down"
start b; B=$started
timeout 10 "$CLI" listen "$W/b.sock" 2000 > "$W/backlog.txt"
n=$(wc -l < "$W/backlog.txt")
order=$(awk '{split($2,r,"="); split($3,s,"="); if (last[r[2]]+1 != s[2]) bad++; last[r[2]]=s[2]} END {print bad+0}' "$W/backlog.txt")
[ "$n" = 2000 ] && [ "$order" = 0 ] && ok "backlog after the peer came up: $n messages in order" \
    || bad "backlog: $n messages, $order out of order"

# 2. cross-node and local fan-out, flat out and at 1k/s
if "$CLI" bench "$W/a.sock" "$W/b.sock" "$W/a.sock" -n 50000 -R 20 > "$W/bench1.txt" 2>&1; then
    ok "flat out: $(head -1 "$W/bench1.txt")"
else bad "flat out: $(cat "$W/bench1.txt")"; fi
if "$CLI" bench "$W/b.sock" "$W/a.sock" -n 3000 -r 1000 -R 10 > "$W/bench2.txt" 2>&1; then
    ok "1k/s b->a: $(tail -1 "$W/bench2.txt")"
else bad "1k/s: $(cat "$W/bench2.txt")"; fi

# 3. bad input closes only that connection
python3 - "$W/b.sock" > "$W/bad.txt" <<'EOF'
import socket, sys
def t(data):
    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.send(data); s.settimeout(2)
    try: return "closed" if s.recv(10) == b"" else "data"
    except socket.timeout: return "open"
hello = bytes([0,0,0,5,0x12,3,0x0a,1,0x78])
print(t(bytes([0xff,0xff,0xff,0xff])), t(bytes([0,0,0,3,0xff,0xff,0xff])), t(bytes([0,0,0,2,0x1a,0])),
      t(hello + bytes([0,0,0,4,0x1a,2,0x08,0])))
EOF
[ "$(cat "$W/bad.txt")" = "closed closed closed open" ] && ok "bad frames: $(cat "$W/bad.txt")" \
    || bad "bad frames: $(cat "$W/bad.txt")"

# 4. a worker that stops reading is dropped at its bound (1 MiB on b), others are unaffected
python3 - "$W/b.sock" <<'EOF' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.send(bytes([0,0,0,5,0x12,3,0x0a,1,0x78])); time.sleep(5)
EOF
sleep 0.3
"$CLI" bench "$W/a.sock" "$W/b.sock" -n 20000 -r 20000 -b 1000 > "$W/bench3.txt" 2>&1 || bad "reader next to a stuck one"
grep -q "is not reading" "$W/b.log" && ok "stuck worker dropped" || bad "stuck worker not dropped"

# 5. create_room answers
out=$(timeout 10 "$CLI" create "$W/a.sock" direct "" 1 2 3)
case "$out" in *"bad_request: a direct room has exactly two members"*) ok "create_room validation";;
               *) bad "create_room validation: $out";; esac
if [ -z "${MYSQL:-}" ]; then
    out=$(timeout 10 "$CLI" create "$W/a.sock" group t 1 2)
    case "$out" in *unavailable*) ok "create_room without a database: unavailable";; *) bad "create_room: $out";; esac
fi

# 6. SIGTERM: exit 0, socket removed, no sanitizer report
kill -TERM "$A" "$B"
wait "$A"; ra=$?; wait "$B"; rb=$?
pids=()
[ "$ra" = 0 ] && [ "$rb" = 0 ] && ok "SIGTERM: exit 0" || bad "exit codes $ra $rb"
[ ! -e "$W/a.sock" ] && ok "socket removed" || bad "socket left behind"
if grep -E "Sanitizer|runtime error|LeakSanitizer" "$W"/*.log; then bad "sanitizer report"; else ok "no sanitizer report"; fi

echo "logs in $W"
[ "$fails" = 0 ] && echo "all passed" || { echo "$fails failed"; exit 1; }
