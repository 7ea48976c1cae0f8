#!/bin/bash
# history_pool_ab.sh: alternated A/B runs of history pages with the
# replica's InnoDB buffer pool at two sizes, against scenario 5's deep room.
#
#   bash bench/history_pool_ab.sh ROOM ROUNDS [SMALL [LARGE]]
#   e.g. bash bench/history_pool_ab.sh 1100 4 256M 2G
#
# Needs the stack (MINICHAT_PORT_OFFSET and MINICHAT_RUN exported) and the
# room of `bash bench/bench.sh --scenarios 5` (10,000,000 rows by default).
# Each round runs A, then B:
#   A  the replica's pool shrunk to SMALL (SET GLOBAL innodb_buffer_pool_size,
#      online), then pages from three depths no earlier run of this script
#      read (a pool smaller than the table holds the pages read last, so
#      these are the pages a reader who scrolls somewhere new meets);
#   B  the pool grown to LARGE and the room's rows read once (one scan of
#      its primary key: warm, as scenario 5 with S5_WARM=1), then pages
#      from three more such depths.
# Each run is build/bin/history_load (PAGES pages of 50 from each depth,
# 1,000 by default) through a bench nginx as bench/history_ab.sh starts one,
# and prints history_load's lines (with the replica's disk reads) and the
# load average.  The pool is left at LARGE.  Depths are taken from 8,400,000
# (or START) down in steps of 100,000 (fresh rows each run, 50,000 below each depth;
# 82 depths, 13 rounds of a 10M-row room; a second invocation reads the
# same depths again): the seqs above were read by the scenario's load and
# its newest depth, and the scenario's middle depth is skipped.
# A measurement tool: it asserts nothing.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
off=${MINICHAT_PORT_OFFSET:-0}
run=${MINICHAT_RUN:-$top/.run}
bd=$run/bench/nginx
port=$((8093 + off))
replica=$((13307 + off))
user=990000005   # scenario 5's reader (bench/scenario_5.sh s5_user)
[ $# -ge 2 ] && [ $# -le 4 ] || { echo "usage: $0 ROOM ROUNDS [SMALL [LARGE]]" >&2; exit 2; }
room=$1 rounds=$2 small=${3:-256M} large=${4:-2G}
bytes() { local n=${1%[MG]}; [ "${1: -1}" = G ] && echo $((n << 30)) || echo $((n << 20)); }
sql() { mariadb --no-defaults --protocol=TCP -h127.0.0.1 -P"$replica" -uroot minichat -N -e "$1"; }

source "$top/bench/bench_nginx.sh"
bench_nginx_up "$bd" "$port" "$run" || exit 1
started=$bench_nginx_started

# pool SIZE: the replica's pool resized online, once InnoDB says it is done
pool() {
    sql "SET GLOBAL innodb_buffer_pool_size = $(bytes "$1")"
    for _ in $(seq 600); do
        st=$(sql "SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_resize_status'" | cut -f2)
        [ "$(sql "SELECT @@innodb_buffer_pool_size")" = "$(bytes "$1")" ] && { [ -z "$st" ] || grep -qi complet <<< "$st"; } \
            && return 0
        sleep 0.1
    done
    echo "history_pool_ab: the pool did not reach $1" >&2
    exit 1
}

# depths: the next three fresh depths in $d (not in a subshell: it moves $next)
next=${START:-8400001}
depths() {
    local i
    d=
    for i in 1 2 3; do
        [ $((next - 1)) -eq 5000000 ] && next=$((next - 100000))
        [ "$next" -gt 100000 ] || { echo "history_pool_ab: out of fresh depths" >&2; exit 1; }
        d+=${d:+,}$next
        next=$((next - 100000))
    done
}

for r in $(seq "$rounds"); do
    for side in A B; do
        if [ $side = A ]; then
            pool "$small"
            what="pool $small, pages not read since it shrank"
        else
            pool "$large"
            t0=$(date +%s%N)
            sql "SELECT COUNT(*) FROM messages FORCE INDEX (PRIMARY) WHERE room_id = $room AND LENGTH(body) >= 0" > /dev/null
            what="pool $large, warmed in $((($(date +%s%N) - t0) / 1000000)) ms"
        fi
        depths
        echo "round $r [$side: $what] load $(cut -d' ' -f1 /proc/loadavg) befores $d"
        "$top/build/bin/history_load" --port "$port" --secret-file "$top/conf/dev-jwt-secret" --user "$user" \
            --room "$room" --befores "$d" --pages "${PAGES:-1000}" --limit 50 --replica-port "$replica" \
            | grep 'depth=' | sed 's/^/    /'
    done
done
[ "$started" = 1 ] && bench_nginx_down "$bd"
exit 0
