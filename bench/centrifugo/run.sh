#!/usr/bin/env bash
# Centrifugo for `make bench` (issue 9): the binary bench/centrifugo/build.sh
# caches, with bench/centrifugo/config.json, on 127.0.0.1 only.
#
#   run.sh start     start it (idempotent) and wait until it answers
#   run.sh stop      stop the one this run directory started (by pid file)
#   run.sh status    "running PORT..." or "stopped"; exit 0 / 1
#   run.sh port      the port(s) it listens on
#
# NODES=2 (scenario 3, cross-node latency) makes the same commands run two
# Centrifugo nodes that share a Redis of their own (started here, stopped
# here): the Redis engine, broker and presence manager both, so that a
# publication on one node reaches a subscriber of the other, with history
# and recovery in Redis.  The pair is apart from the single node (other
# ports, other files): both may run at once.
#
# What depends on the run is given by environment, so config.json stays one
# file for every stack on the machine:
#   port        18000 + MINICHAT_PORT_OFFSET, or MINICHAT_CENTRIFUGO_PORT
#               (HTTP: WebSocket at /connection/websocket, server API at
#               /api, /health); NODES=2: 18001 + offset and 18002 + offset,
#               or MINICHAT_CENTRIFUGO_PORT and the port after it
#   redis       NODES=2: redis-server on 127.0.0.1:16399 + offset, or
#               MINICHAT_CENTRIFUGO_REDIS_PORT, no persistence
#   secret      the HMAC key of connection JWTs: conf/dev-jwt-secret, the
#               one MiniChat's dev stack takes, so build/bin/loadgen signs
#               tokens for both systems from the same --secret-file
#   files       $MINICHAT_RUN/centrifugo/: centrifugo.log (its log),
#               centrifugo.pid, stdout.log; NODES=2:
#               $MINICHAT_RUN/centrifugo-2/{node1,node2,redis}/
# Any other CENTRIFUGO_* variable reaches Centrifugo too (the tests shorten
# client.ping_interval with CENTRIFUGO_CLIENT_PING_INTERVAL).
# Nothing is ever stopped by name: only the pid in a pid file, after
# checking that it still runs the program this script started there.
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
RUN=${MINICHAT_RUN:-$top/.run}
OFF=${MINICHAT_PORT_OFFSET:-0}
NODES=${NODES:-1}
T_START=${CENTRIFUGO_START_TIMEOUT:-30}
T_STOP=10
case $NODES in
1)
    PORTS=${MINICHAT_CENTRIFUGO_PORT:-$((18000 + OFF))}
    DIRS=$RUN/centrifugo
    ;;
2)
    p1=${MINICHAT_CENTRIFUGO_PORT:-$((18001 + OFF))}
    PORTS="$p1 $((p1 + 1))"
    DIRS="$RUN/centrifugo-2/node1 $RUN/centrifugo-2/node2"
    REDIS_PORT=${MINICHAT_CENTRIFUGO_REDIS_PORT:-$((16399 + OFF))}
    REDIS_DIR=$RUN/centrifugo-2/redis
    ;;
*)
    echo "run.sh: NODES must be 1 or 2, got \"$NODES\"" >&2
    exit 2
    ;;
esac

# live_pid PIDFILE PROGRAM: the pid in PIDFILE when it still runs PROGRAM.
live_pid() {
    local pid
    [ -f "$1" ] || return 0
    pid=$(cat "$1")
    case $pid in '' | *[!0-9]*) return 0 ;; esac
    if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2"; then
        echo "$pid"
    fi
}

answers() {
    curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$1/health" 2>/dev/null
}

# stop_pid PIDFILE PROGRAM: TERM, then KILL after T_STOP s.
stop_pid() {
    local pid i
    pid=$(live_pid "$1" "$2")
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < T_STOP * 10; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "run.sh: $2 pid $pid still running ${T_STOP}s after SIGTERM; sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$1"
}

# The pair's Redis: no persistence, loopback only, its own directory.
start_redis() {
    local i
    [ -n "$(live_pid "$REDIS_DIR/redis.pid" redis-server)" ] && return 0
    mkdir -p "$REDIS_DIR"
    setsid redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$REDIS_DIR" --save "" --appendonly no \
        --logfile "$REDIS_DIR/redis.log" </dev/null >/dev/null 2>&1 &
    echo $! >"$REDIS_DIR/redis.pid"
    for ((i = 0; i < 50; i++)); do
        redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && return 0
        sleep 0.1
    done
    echo "centrifugo: its Redis does not answer on 127.0.0.1:$REDIS_PORT" >&2
    tail -n 20 "$REDIS_DIR/redis.log" >&2 2>/dev/null || true
    return 1
}

# start_node DIR PORT: one Centrifugo; with NODES=2 on the pair's Redis.
start_node() {
    local dir=$1 port=$2 bin pid i
    local -a engine=()
    if [ -n "$(live_pid "$dir/centrifugo.pid" centrifugo)" ] && answers "$port"; then
        return 0
    fi
    bin=$(bash "$top/bench/centrifugo/build.sh")
    mkdir -p "$dir"
    if [ "$NODES" = 2 ]; then
        engine=(CENTRIFUGO_ENGINE_TYPE=redis "CENTRIFUGO_ENGINE_REDIS_ADDRESS=redis://127.0.0.1:$REDIS_PORT")
    fi
    # Centrifugo reads CENTRIFUGO_<SECTION>_<KEY> over the file's values
    env "${engine[@]}" \
        CENTRIFUGO_HTTP_SERVER_PORT="$port" \
        CENTRIFUGO_CLIENT_TOKEN_HMAC_SECRET_KEY="$(tr -d '\r\n' <"$top/conf/dev-jwt-secret")" \
        CENTRIFUGO_LOG_FILE="$dir/centrifugo.log" \
        setsid "$bin" --config "$top/bench/centrifugo/config.json" </dev/null >"$dir/stdout.log" 2>&1 &
    pid=$!
    echo "$pid" >"$dir/centrifugo.pid"
    for ((i = 0; i < T_START * 10; i++)); do
        if answers "$port"; then
            echo "centrifugo: pid $pid on 127.0.0.1:$port"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    echo "centrifugo: not answering on 127.0.0.1:$port after ${T_START}s; its output:" >&2
    tail -n 20 "$dir/stdout.log" "$dir/centrifugo.log" >&2 2>/dev/null || true
    return 1
}

start() {
    local -a dirs ports
    local i
    read -ra dirs <<<"$DIRS"
    read -ra ports <<<"$PORTS"
    if [ "$NODES" = 2 ]; then
        start_redis || { stop; return 1; }
    fi
    for i in "${!dirs[@]}"; do
        start_node "${dirs[$i]}" "${ports[$i]}" || { stop; return 1; }
    done
}

stop() {
    local d
    for d in $DIRS; do
        stop_pid "$d/centrifugo.pid" centrifugo
    done
    if [ "$NODES" = 2 ]; then
        stop_pid "$REDIS_DIR/redis.pid" redis-server
    fi
}

status() {
    local d
    for d in $DIRS; do
        [ -n "$(live_pid "$d/centrifugo.pid" centrifugo)" ] || { echo stopped; return 1; }
    done
    echo "running $PORTS"
}

case ${1:-} in
start) start ;;
stop) stop ;;
status) status ;;
port) echo "$PORTS" ;;
*)
    echo "usage: [NODES=2] $0 start|stop|status|port" >&2
    exit 2
    ;;
esac
