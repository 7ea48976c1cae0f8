#!/bin/bash
# history_ab.sh: alternated A/B runs of history pages with one nginx
# directive set two ways, against the bench nginx of scenario 5.
#
#   bash bench/history_ab.sh ROOM ROUNDS "DIRECTIVE A" "DIRECTIVE B"
#   e.g. bash bench/history_ab.sh 1100 4 "minichat_history_read_ahead off" "minichat_history_read_ahead on"
#
# Needs the stack, with this stack's MINICHAT_PORT_OFFSET and MINICHAT_RUN
# exported, and scenario 5's deep room (ROOM: the room a run of
# `bash bench/bench.sh --scenarios 5` printed).  It starts a bench nginx as
# bench.sh does (node a's conf, no access log, no limits, on bench.sh's
# port) unless one runs, and stops the one it started.  Each round runs
# A, then B: the directive's line is replaced in the bench nginx's conf (added
# after minichat_members_cache when missing), nginx reloads, and
# build/bin/history_load pages back from the three depths of scenario 5
# (PAGES pages of 50 from each; 700 by default).  Prints per run the load
# average, history_load's line for all pages, and the CPU µs per page of the
# nginx workers, Redis, relay-worker a and the replica (/proc, whole run).
# A measurement tool: it asserts nothing.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
off=${MINICHAT_PORT_OFFSET:-0}
run=${MINICHAT_RUN:-$top/.run}
bd=$run/bench/nginx
port=$((8093 + off))
user=990000005   # scenario 5's reader (bench/scenario_5.sh s5_user)
[ $# -eq 4 ] || { echo "usage: $0 ROOM ROUNDS 'DIRECTIVE A' 'DIRECTIVE B'" >&2; exit 2; }
room=$1 rounds=$2
source "$top/bench/bench_nginx.sh"
bench_nginx_up "$bd" "$port" "$run" || exit 1
started=$bench_nginx_started

pids() {
    local p
    for p in $(pgrep -P "$(cat "$bd/nginx.pid")"); do echo "nginx $p"; done
    for p in "$run"/redis/redis.pid "$run"/redis-cluster/*/redis.pid; do [ -s "$p" ] && echo "redis $(cat "$p")"; done
    echo "relay $(cat "$run/relay-a/relay.pid")"
    echo "replica $(cat "$run/mysql-replica/mysqld.pid")"
}

# cpu_ticks < "group pid" lines: "group ticks" per group, utime + stime summed
cpu_ticks() {
    while read -r g p; do awk -v g="$g" '{print g, $14 + $15}' "/proc/$p/stat"; done \
        | awk '{t[$1] += $2} END {for (g in t) print g, t[g]}' | sort
}

for r in $(seq "$rounds"); do
    for d in "$3" "$4"; do
        name=${d%% *}
        sed -i "/^ *$name /d" "$bd/nginx.conf"
        sed -i "s|^\( *\)minichat_members_cache \(.*\)|&\n\1$d;|" "$bd/nginx.conf"
        kill -HUP "$(cat "$bd/nginx.pid")"
        sleep 2
        list=$(pids)
        c0=$(cpu_ticks <<< "$list")
        out=$("$top/build/bin/history_load" --port "$port" --secret-file "$top/conf/dev-jwt-secret" --user "$user" \
            --room "$room" --befores 1000001,500000,50001 --pages "${PAGES:-700}" --limit 50 | grep 'depth=all')
        c1=$(cpu_ticks <<< "$list")
        pages=$(sed 's/.* pages=\([0-9]*\).*/\1/' <<< "$out")
        cpu=$(join <(echo "$c0") <(echo "$c1") \
            | awk -v n="$pages" -v hz="$(getconf CLK_TCK)" '{printf "%s=%.0f ", $1, ($3 - $2) * 1e6 / hz / n}')
        echo "round $r [$d] load $(cut -d' ' -f1 /proc/loadavg): $out cpu_us_per_page: $cpu"
    done
done
[ "$started" = 1 ] && bench_nginx_down "$bd"
exit 0
