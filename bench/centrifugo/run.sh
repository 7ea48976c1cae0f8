#!/usr/bin/env bash
# Centrifugo for `make bench` (issue 9): the binary bench/centrifugo/build.sh
# caches, with bench/centrifugo/config.json, on 127.0.0.1 only.
#
#   run.sh start     start it (idempotent) and wait until it answers
#   run.sh stop      stop the one this run directory started (by pid file)
#   run.sh status    "running PORT" or "stopped"; exit 0 / 1
#   run.sh port      the port it listens on
#
# What depends on the run is given by environment, so config.json stays one
# file for every stack on the machine:
#   port        18000 + MINICHAT_PORT_OFFSET, or MINICHAT_CENTRIFUGO_PORT
#               (HTTP: WebSocket at /connection/websocket, server API at
#               /api, /health)
#   secret      the HMAC key of connection JWTs: conf/dev-jwt-secret, the
#               one MiniChat's dev stack takes, so build/bin/loadgen signs
#               tokens for both systems from the same --secret-file
#   files       $MINICHAT_RUN/centrifugo/: centrifugo.log (its log),
#               centrifugo.pid, stdout.log
# Any other CENTRIFUGO_* variable reaches Centrifugo too (the tests shorten
# client.ping_interval with CENTRIFUGO_CLIENT_PING_INTERVAL).
# Nothing is ever stopped by name: only the pid in the pid file, after
# checking that it still runs centrifugo.
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
RUN=${MINICHAT_RUN:-$top/.run}
OFF=${MINICHAT_PORT_OFFSET:-0}
PORT=${MINICHAT_CENTRIFUGO_PORT:-$((18000 + OFF))}
dir=$RUN/centrifugo
pidf=$dir/centrifugo.pid
T_START=${CENTRIFUGO_START_TIMEOUT:-30}
T_STOP=10

# The pid of the centrifugo this directory started, or nothing.
live_pid() {
    local pid
    [ -f "$pidf" ] || return 0
    pid=$(cat "$pidf")
    case $pid in '' | *[!0-9]*) return 0 ;; esac
    if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q centrifugo; then
        echo "$pid"
    fi
}

answers() {
    curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$PORT/health" 2>/dev/null
}

start() {
    local bin pid i
    if [ -n "$(live_pid)" ]; then
        answers && return 0
    fi
    bin=$(bash "$top/bench/centrifugo/build.sh")
    mkdir -p "$dir"
    # Centrifugo reads CENTRIFUGO_<SECTION>_<KEY> over the file's values
    CENTRIFUGO_HTTP_SERVER_PORT=$PORT \
    CENTRIFUGO_CLIENT_TOKEN_HMAC_SECRET_KEY=$(tr -d '\r\n' <"$top/conf/dev-jwt-secret") \
    CENTRIFUGO_LOG_FILE=$dir/centrifugo.log \
        setsid "$bin" --config "$top/bench/centrifugo/config.json" </dev/null >"$dir/stdout.log" 2>&1 &
    pid=$!
    echo "$pid" >"$pidf"
    for ((i = 0; i < T_START * 10; i++)); do
        if answers; then
            echo "centrifugo: pid $pid on 127.0.0.1:$PORT"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    echo "centrifugo: not answering on 127.0.0.1:$PORT after ${T_START}s; its output:" >&2
    tail -n 20 "$dir/stdout.log" "$dir/centrifugo.log" >&2 2>/dev/null || true
    stop
    return 1
}

stop() {
    local pid i
    pid=$(live_pid)
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < T_STOP * 10; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "centrifugo: pid $pid still running ${T_STOP}s after SIGTERM; sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pidf"
}

case ${1:-} in
start) start ;;
stop) stop ;;
status)
    if [ -n "$(live_pid)" ]; then
        echo "running $PORT"
    else
        echo stopped
        exit 1
    fi
    ;;
port) echo "$PORT" ;;
*)
    echo "usage: $0 start|stop|status|port" >&2
    exit 2
    ;;
esac
