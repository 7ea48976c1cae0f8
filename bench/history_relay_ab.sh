#!/bin/bash
# history_relay_ab.sh: alternated A/B runs of history pages with two
# relay-worker binaries, against the bench nginx of scenario 5.
#
#   bash bench/history_relay_ab.sh ROOM ROUNDS BINARY_A BINARY_B
#   e.g. bash bench/history_relay_ab.sh 1100 4 /tmp/old/relay-worker build/bin/relay-worker
#
# Needs the stack, with this stack's MINICHAT_PORT_OFFSET and MINICHAT_RUN
# exported, and scenario 5's deep room (ROOM).  It starts a bench nginx as
# bench.sh does unless one runs, and stops the one it started.  Each round
# runs A, then B: relay-worker a is stopped (TERM, as stack.sh stops it) and
# started again from the binary with the stack's own configuration, then
# build/bin/history_load pages back from the three depths of scenario 5 for
# a room of DEPTH messages (DEPTH + 1, DEPTH / 2, PAGES * 50 + 1; DEPTH is
# 10,000,000 by default, PAGES 700).  Prints per run the load average,
# history_load's line for all pages, and the CPU µs per page of the nginx
# workers, Redis, relay-worker a's main thread and its other threads (the DB
# threads do the work there) and the replica (/proc, whole run), and the
# context switches per page of each (every thread's, /proc/.../status).  At the end
# relay-worker a runs build/bin/relay-worker again.  A measurement tool: it
# asserts nothing.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
off=${MINICHAT_PORT_OFFSET:-0}
run=${MINICHAT_RUN:-$top/.run}
bd=$run/bench/nginx
rd=$run/relay-a
port=$((8093 + off))
user=990000005   # scenario 5's reader (bench/scenario_5.sh s5_user)
depth=${DEPTH:-10000000}
pages=${PAGES:-700}
[ $# -eq 4 ] || { echo "usage: $0 ROOM ROUNDS BINARY_A BINARY_B" >&2; exit 2; }
room=$1 rounds=$2
for b in "$3" "$4"; do [ -x "$b" ] || { echo "$0: $b is not an executable" >&2; exit 2; }; done
source "$top/bench/bench_nginx.sh"
bench_nginx_up "$bd" "$port" "$run" || exit 1
started=$bench_nginx_started

# relay_restart BINARY: relay-worker a from BINARY, its socket back within 10 s
relay_restart() {
    local pid
    pid=$(cat "$rd/relay.pid")
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { echo "$0: relay-worker $pid did not stop" >&2; exit 1; }
    rm -f "$rd/relay.sock"
    setsid "$1" -c "$rd/relay-worker.conf" < /dev/null >> "$rd/relay.log" 2>&1 9>&- &
    echo $! > "$rd/relay.pid"
    for _ in $(seq 100); do [ -S "$rd/relay.sock" ] && break; sleep 0.1; done
    [ -S "$rd/relay.sock" ] || { echo "$0: relay-worker from $1 did not come up" >&2; exit 1; }
    sleep 2   # the nginx workers reconnect
}

# "group tid-or-pid path" lines: a process's stat, or one thread's
pids() {
    local p r
    for p in $(pgrep -P "$(cat "$bd/nginx.pid")"); do echo "nginx /proc/$p/stat"; done
    for p in "$run"/redis/redis.pid "$run"/redis-cluster/*/redis.pid; do
        [ -s "$p" ] && echo "redis /proc/$(cat "$p")/stat"
    done
    r=$(cat "$rd/relay.pid")
    for p in /proc/"$r"/task/*; do
        if [ "${p##*/}" = "$r" ]; then echo "relay_main $p/stat"; else echo "relay_rest $p/stat"; fi
    done
    echo "replica /proc/$(cat "$run/mysql-replica/mysqld.pid")/stat"
}

# cpu_ticks < "group path" lines: "group ticks" per group, utime + stime summed
cpu_ticks() {
    while read -r g p; do [ -r "$p" ] && sed 's/.*) //' "$p" | awk -v g="$g" '{print g, $12 + $13}'; done \
        | awk '{t[$1] += $2} END {for (g in t) print g, t[g]}' | sort
}

# switches < "group path" lines: "group n" per group, the context switches
# (voluntary and not: each is a wake-up or a preemption) of every thread of a
# listed process, or of the listed thread
switches() {
    while read -r g p; do
        case $p in
        */task/*) cat "${p%/stat}/status" ;;
        *) cat "${p%/stat}"/task/*/status ;;
        esac 2>/dev/null | awk -v g="$g" '/ctxt_switches/ {n += $2} END {print g, n + 0}'
    done | awk '{t[$1] += $2} END {for (g in t) print g, t[g]}' | sort
}

for r in $(seq "$rounds"); do
    for b in "$3" "$4"; do
        relay_restart "$b"
        list=$(pids)
        c0=$(cpu_ticks <<< "$list")
        s0=$(switches <<< "$list")
        out=$("$top/build/bin/history_load" --port "$port" --secret-file "$top/conf/dev-jwt-secret" --user "$user" \
            --room "$room" --befores "$((depth + 1)),$((depth / 2)),$((pages * 50 + 1))" --pages "$pages" \
            --limit 50 | grep 'depth=all')
        c1=$(cpu_ticks <<< "$list")
        s1=$(switches <<< "$list")
        n=$(sed 's/.* pages=\([0-9]*\).*/\1/' <<< "$out")
        cpu=$(join <(echo "$c0") <(echo "$c1") \
            | awk -v n="$n" -v hz="$(getconf CLK_TCK)" '{printf "%s=%.0f ", $1, ($3 - $2) * 1e6 / hz / n}')
        cs=$(join <(echo "$s0") <(echo "$s1") | awk -v n="$n" '{printf "%s=%.2f ", $1, ($3 - $2) / n}')
        echo "round $r [$b] load $(cut -d' ' -f1 /proc/loadavg): $out cpu_us_per_page: $cpu switches_per_page: $cs"
    done
done
relay_restart "$top/build/bin/relay-worker"
[ "$started" = 1 ] && bench_nginx_down "$bd"
exit 0
