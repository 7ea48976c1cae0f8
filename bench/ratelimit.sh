#!/usr/bin/env bash
# Rate-limit decisions per second through nginx against redis-benchmark
# running the same script (lua/limit.lua) with EVALSHA on random user keys.
# Through nginx two ways, both on a bench nginx (this stack's module and
# node a's configuration on its own port, with access_log off, as
# redis-benchmark's Redis writes no log line per command either):
#   - WebSocket: minichat_limit_messages rate=1r/m burst=0 and no strikes,
#     so pipelined `send`s are each refused by limit.lua alone;
#   - REST: `GET /api/rooms?limit=0` under the dev stack's
#     minichat_limit_rest (20r/s burst=50), limit.lua then a 400, on
#     keep-alive connections with HTTP/1.1 pipelining as deep as
#     redis-benchmark's -P (see bench/ratelimit_load.c for why); the HTTP
#     floor, a 404 before the token is read, is printed beside it.
# A measurement, not a test: it prints a table and asserts nothing.  Needs
# the stack running (scripts/stack.sh start, with the same
# MINICHAT_PORT_OFFSET and MINICHAT_RUN) and `make`.
#
#   bash bench/ratelimit.sh [runs]        (default 3 runs each; medians)
#
# BRIEF.md's target: nginx >= 80% of what Redis serves for the same script.
# Both sides share the box's cores with their load generator; the nginx side
# also pays HTTP parsing, JWT verification and the route's own answer.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
off=${MINICHAT_PORT_OFFSET:-0}
runs=${1:-3}
redis_port=$((16379 + off))
conns=${CONNS:-256}
depth=${DEPTH:-16}   # redis-benchmark's pipeline, and the REST load's HTTP pipelining
secs=${SECONDS_PER_RUN:-5}
load=$top/build/bench/ratelimit_load
wsload=$top/build/bench/ratelimit_ws
run_dir=${MINICHAT_RUN:-$top/.run}
bench_port=$((8089 + off))
bd=$run_dir/bench-nginx

mkdir -p "$top/build/bench"
cc -O2 -Wall -Wextra -Werror -std=gnu11 -D_GNU_SOURCE -I"$top/lib/include" -I"$top/build/gen" \
    -o "$load" "$top/bench/ratelimit_load.c" "$top/build/libminichat.a" -lssl -lcrypto -ljansson
cc -O2 -Wall -Wextra -Werror -std=gnu11 -D_GNU_SOURCE -I"$top/lib/include" -I"$top/build/gen" \
    -o "$wsload" "$top/bench/ratelimit_ws.c" "$top/build/libminichat.a" -lssl -lcrypto -ljansson

# the bench nginx: node a's configuration, its own port, pid and logs, no
# access log, limits that refuse every send but a user's first without a
# strike, and the dev stack's REST limit (no user of the REST load comes
# near it: 200000 users, each asked about once every few seconds)
mkdir -p "$bd"
sed -e "s|^pid .*|pid $bd/nginx.pid;|" -e "s|^error_log .*|error_log $bd/error.log info;|" \
    -e "s|access_log .*|access_log off;|" -e "s|listen 127.0.0.1:[0-9]*;|listen 127.0.0.1:$bench_port;|" \
    -e '/minichat_limit_/d' \
    -e 's|^\( *minichat_jwt_secret_file .*\)$|\1\n    minichat_limit_messages rate=1r/m burst=0;\n    minichat_limit_rest rate=20r/s burst=50;\n    minichat_limit_strikes off;|' \
    "$run_dir/nginx-a/nginx.conf" > "$bd/nginx.conf"
/usr/sbin/nginx -p "$bd" -c "$bd/nginx.conf" -e "$bd/error.log"
stop_bench() {
    local pid
    pid=$(cat "$bd/nginx.pid" 2>/dev/null) || return 0
    kill -QUIT "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
}
trap stop_bench EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$bench_port/healthz" > /dev/null && break; sleep 0.1; done

sha=$(redis-cli -p "$redis_port" -x SCRIPT LOAD < "$top/lua/limit.lua")
[ "$sha" = "$(sha1sum "$top/lua/limit.lua" | cut -d' ' -f1)" ] || { echo "SCRIPT LOAD gave $sha" >&2; exit 1; }

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

# the dev stack's minichat_limit_rest (20r/s burst=50), strikes and bans
# (the REST load is never refused, so the strikes never come into play)
args=(50000 50 40 10000 2000 4000 0)
redis_runs=() nginx_runs=() floor_runs=() ws_runs=()
for i in $(seq "$runs"); do
    r=$(redis-benchmark -h 127.0.0.1 -p "$redis_port" -c "$conns" -P "$depth" -n $((200000 * secs / 5)) \
            -r 100000000 -q EVALSHA "$sha" 3 '{u:__rand_int__}:rl:rest' '{u:__rand_int__}:ban' \
            '{u:__rand_int__}:strikes' "${args[@]}" | tr '\r' '\n' | sed -n 's/.*: \([0-9.]*\) requests per second.*/\1/p' | tail -1 | cut -d. -f1)
    redis_runs+=("$r")
    n=$("$load" --port "$bench_port" --secret-file "$top/conf/dev-jwt-secret" --conns "$conns" --depth "$depth" \
            --seconds "$secs" --users 200000)
    fl=$("$load" --port "$bench_port" --secret-file "$top/conf/dev-jwt-secret" --conns "$conns" --depth "$depth" \
            --seconds "$secs" --users 1000 --path /api/none)
    w=$("$wsload" --port "$bench_port" --secret-file "$top/conf/dev-jwt-secret" --conns 64 --depth 32 \
            --seconds "$secs")
    echo "run $i: redis-benchmark $r/s; nginx websocket $w; nginx rest $n; http floor $fl" >&2
    ws_runs+=("$(awk '{print int($2)}' <<< "$w")")
    nginx_runs+=("$(awk '{print int($2)}' <<< "$n")")
    floor_runs+=("$(awk '{print int($2)}' <<< "$fl")")
done

rm=$(printf '%s\n' "${redis_runs[@]}" | median)
nm=$(printf '%s\n' "${nginx_runs[@]}" | median)
fm=$(printf '%s\n' "${floor_runs[@]}" | median)
wm=$(printf '%s\n' "${ws_runs[@]}" | median)
printf '\n%-44s %12s\n' "limit.lua decisions per second (median of $runs)" ""
printf '%-44s %12s\n' "redis-benchmark EVALSHA, random keys" "$rm"
printf '%-44s %12s\n' "through nginx (WebSocket sends, 64 x 32 deep)" "$wm"
printf '%-44s %12s\n' "through nginx (REST, $conns x $depth pipelined)" "$nm"
printf '%-44s %12s\n' "nginx HTTP floor (404 before auth, no Redis)" "$fm"
awk -v n="$wm" -v r="$rm" 'BEGIN {printf "%-44s %11.0f%%\n", "nginx WebSocket / redis", 100 * n / r}'
awk -v n="$nm" -v r="$rm" 'BEGIN {printf "%-44s %11.0f%%\n", "nginx REST / redis", 100 * n / r}'
awk -v n="$nm" -v f="$fm" 'BEGIN {printf "%-44s %11.0f%%\n", "nginx REST / HTTP floor", 100 * n / f}'
