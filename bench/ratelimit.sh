#!/usr/bin/env bash
# Rate-limit decisions per second through nginx against redis-benchmark
# running the same script (lua/limit.lua) with EVALSHA on random user keys.
# Through nginx three ways, on a bench nginx (this stack's module, or
# BENCH_MODULE's, and node a's configuration on its own ports, with
# access_log off, as redis-benchmark's Redis writes no log line per command
# either):
#   - WebSocket: minichat_limit_messages rate=1r/m burst=0 and no strikes,
#     so pipelined `send`s are each refused by limit.lua alone;
#   - REST over cleartext HTTP/2 (h2c, prior knowledge, on port 8090 +
#     offset): `GET /api/rooms?limit=0` under the dev stack's
#     minichat_limit_rest (20r/s burst=50), limit.lua then a 400, each
#     request a distinct user, 16 concurrent streams per connection;
#   - REST over HTTP/1.1 (port 8089 + offset), the same requests on
#     keep-alive connections pipelined 16 deep.
# HTTP/2 is the fair counterpart of redis-benchmark's -P 16: its requests
# are in flight together and their answers can share a write, as
# redis-benchmark's 16 commands share one write and one read each way.
# HTTP/1.1 pipelining cannot do that: nginx reads the next pipelined request
# only after the previous answer is written, so every answer is its own
# write (see bench/ratelimit_load.c).  Both REST rows are printed, with the
# HTTP floor of each (a 404 before the token is read, no Redis).
# A measurement, not a test: it prints tables, then the same figures as
# `ratelimit: median|runs|cpu_us KEY=VALUE ...` lines for make bench
# (bench/scenario_4.sh), and asserts nothing.  Needs
# the stack running (scripts/stack.sh start, with the same
# MINICHAT_PORT_OFFSET and MINICHAT_RUN) and `make`.
#
#   bash bench/ratelimit.sh [runs]        (default 3 runs each; medians)
#   BENCH_MODULE=/path/to/other.so bash bench/ratelimit.sh 1
#                                         (another build of the module, to
#                                         compare two versions run by run)
#
# BRIEF.md's target: nginx >= 80% of what Redis serves for the same script.
# Both sides share the box's cores with their load generator; the nginx side
# also pays HTTP parsing, JWT verification and the route's own answer.
# Rates on a shared box follow whatever else runs, so the second table gives
# the CPU microseconds per decision of Redis, the bench nginx's workers and
# the load generator, and the rate those costs allow on two cores of our
# own (Redis on at most one of them), with and without the client there.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
off=${MINICHAT_PORT_OFFSET:-0}
runs=${1:-3}
redis_port=$((16379 + off))
conns=${CONNS:-256}
depth=${DEPTH:-16}   # redis-benchmark's pipeline, the REST load's HTTP/1.1 pipelining and its h2 streams
h2_conns=${H2_CONNS:-$conns}
secs=${SECONDS_PER_RUN:-5}
load=$top/build/bench/ratelimit_load
wsload=$top/build/bench/ratelimit_ws
run_dir=${MINICHAT_RUN:-$top/.run}
bench_port=$((8089 + off))
h2_port=$((8090 + off))   # the same server over cleartext HTTP/2 (prior knowledge)
bd=$run_dir/bench-nginx
# the module the bench nginx loads: this checkout's, or another build's to
# compare two versions on the same stack
module=${BENCH_MODULE:-$top/build/nginx/ngx_http_minichat_module.so}

# the bench nginx takes node a's listen line as it is on a plain stack
if grep -Eq '^ *listen 127\.0\.0\.1:[0-9]+ ssl' "$run_dir/nginx-a/nginx.conf"; then
    echo "ratelimit.sh: the stack runs with TLS (MINICHAT_TLS=1); the bench measures a plain one" >&2
    exit 1
fi
mkdir -p "$top/build/bench"
cc -O2 -Wall -Wextra -Werror -std=gnu11 -D_GNU_SOURCE -I"$top/lib/include" -I"$top/build/gen" \
    -o "$load" "$top/bench/ratelimit_load.c" "$top/bench/h2c.c" "$top/build/libminichat.a" -lssl -lcrypto -ljansson
cc -O2 -Wall -Wextra -Werror -std=gnu11 -D_GNU_SOURCE -I"$top/lib/include" -I"$top/build/gen" \
    -o "$wsload" "$top/bench/ratelimit_ws.c" "$top/build/libminichat.a" -lssl -lcrypto -ljansson

# the bench nginx: node a's configuration, its own port, pid and logs, no
# access log, limits that refuse every send but a user's first without a
# strike, and the dev stack's REST limit (no user of the REST load comes
# near it: 200000 users, each asked about once every few seconds)
mkdir -p "$bd"
sed -e "s|^pid .*|pid $bd/nginx.pid;|" -e "s|^error_log .*|error_log $bd/error.log info;|" \
    -e "s|access_log .*|access_log off;|" \
    -e "s|^\( *\)listen 127.0.0.1:[0-9]*;|\1listen 127.0.0.1:$bench_port;\n\1listen 127.0.0.1:$h2_port http2;|" \
    -e '/minichat_limit_/d' -e "s|^load_module .*|load_module $module;|" \
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

# CPU time in ms: used so far by the given processes (/proc/PID/stat), and
# by this script's children that have finished (bash's `times`, which must
# run in this shell, not in a $(...) subshell; the generators print their
# own, which leaves out signing their tokens)
hz=$(getconf CLK_TCK)
proc_ms() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $((t * 1000 / hz)); }
kids_ms() { awk 'NR == 2 {split($1, u, /[ms]/); split($2, s, /[ms]/); printf "%d\n", (u[1] * 60 + u[2] + s[1] * 60 + s[2]) * 1000}' "$bd/times"; }
redis_pid=$(redis-cli -p "$redis_port" INFO server | tr -d '\r' | sed -n 's/^process_id://p')
mapfile -t workers < <(pgrep -P "$(cat "$bd/nginx.pid")")

# Runs one load (its last argument is the number of decisions it makes, or
# "" when it prints "total N" itself): sets out, and us_redis, us_nginx,
# us_load, the CPU microseconds per decision of Redis, the bench nginx's
# workers and the load generator while it ran
run_load() {
    local n="${*: -1}" r0 w0 k0 total cpu
    set -- "${@:1:$(($# - 1))}"
    r0=$(proc_ms "$redis_pid"); w0=$(proc_ms "${workers[@]}"); times > "$bd/times"; k0=$(kids_ms)
    out=$("$@" | tr '\r' '\n')
    times > "$bd/times"
    total=${n:-$(sed -n 's/.* total \([0-9]*\).*/\1/p' <<< "$out")}
    us_redis=$(( ($(proc_ms "$redis_pid") - r0) * 1000 / total ))
    us_nginx=$(( ($(proc_ms "${workers[@]}") - w0) * 1000 / total ))
    cpu=$(sed -n 's/.* cpu_ms \([0-9]*\).*/\1/p' <<< "$out")
    us_load=$(( ${cpu:-$(($(kids_ms) - k0))} * 1000 / total ))
}

# the dev stack's minichat_limit_rest (20r/s burst=50), strikes and bans
# (the REST load is never refused, so the strikes never come into play)
args=(50000 50 40 10000 2000 4000 0)
declare -A runs_of
for i in $(seq "$runs"); do
    nb=$((200000 * secs / 5))
    run_load redis-benchmark -h 127.0.0.1 -p "$redis_port" -c "$conns" -P "$depth" -n "$nb" \
            -r 100000000 -q EVALSHA "$sha" 3 '{u:__rand_int__}:rl:rest' '{u:__rand_int__}:ban' \
            '{u:__rand_int__}:strikes' "${args[@]}" "$nb"
    r=$(sed -n 's/.*: \([0-9.]*\) requests per second.*/\1/p' <<< "$out" | tail -1 | cut -d. -f1)
    runs_of[rb]+="$r " runs_of[rb_cpu]+="$us_redis/$us_nginx/$us_load "
    run_load "$wsload" --port "$bench_port" --secret-file "$top/conf/dev-jwt-secret" --conns 64 --depth 32 \
            --seconds "$secs" ""
    w=$out
    runs_of[ws]+="$(awk '{print int($2)}' <<< "$w") " runs_of[ws_cpu]+="$us_redis/$us_nginx/$us_load "
    run_load "$load" --port "$bench_port" --secret-file "$top/conf/dev-jwt-secret" --conns "$conns" --depth "$depth" \
            --seconds "$secs" --users 200000 ""
    n=$out
    runs_of[rest]+="$(awk '{print int($2)}' <<< "$n") " runs_of[rest_cpu]+="$us_redis/$us_nginx/$us_load "
    run_load "$load" --port "$bench_port" --secret-file "$top/conf/dev-jwt-secret" --conns "$conns" --depth "$depth" \
            --seconds "$secs" --users 1000 --path /api/none ""
    fl=$out
    runs_of[floor]+="$(awk '{print int($2)}' <<< "$fl") " runs_of[floor_cpu]+="$us_redis/$us_nginx/$us_load "
    run_load "$load" --proto h2 --port "$h2_port" --secret-file "$top/conf/dev-jwt-secret" --conns "$h2_conns" \
            --depth "$depth" --seconds "$secs" --users 200000 ""
    n2=$out
    runs_of[rest2]+="$(awk '{print int($2)}' <<< "$n2") " runs_of[rest2_cpu]+="$us_redis/$us_nginx/$us_load "
    run_load "$load" --proto h2 --port "$h2_port" --secret-file "$top/conf/dev-jwt-secret" --conns "$h2_conns" \
            --depth "$depth" --seconds "$secs" --users 1000 --path /api/none ""
    fl2=$out
    runs_of[floor2]+="$(awk '{print int($2)}' <<< "$fl2") " runs_of[floor2_cpu]+="$us_redis/$us_nginx/$us_load "
    echo "run $i: redis-benchmark $r/s; nginx websocket $w; nginx rest $n; http floor $fl; rest h2 $n2; h2 floor $fl2" >&2
done

# the median of one field (1 rate; or of "redis/nginx/load" CPU: 1, 2, 3)
med() { tr ' ' '\n' <<< "${runs_of[$1]}" | grep . | cut -d/ -f"${2:-1}" | median; }

rm=$(med rb) wm=$(med ws) nm=$(med rest) fm=$(med floor) n2m=$(med rest2) f2m=$(med floor2)
printf '\n%-48s %12s\n' "limit.lua decisions per second (median of $runs)" ""
printf '%-48s %12s\n' "redis-benchmark EVALSHA, random keys" "$rm"
printf '%-48s %12s\n' "through nginx (WebSocket sends, 64 x 32 deep)" "$wm"
printf '%-48s %12s\n' "through nginx (REST h2c, $h2_conns x $depth streams)" "$n2m"
printf '%-48s %12s\n' "through nginx (REST HTTP/1.1, $conns x $depth pipelined)" "$nm"
printf '%-48s %12s\n' "nginx h2c floor (404 before auth, no Redis)" "$f2m"
printf '%-48s %12s\n' "nginx HTTP/1.1 floor (404 before auth)" "$fm"
ratio() { awk -v n="$2" -v r="$3" -v t="$1" 'BEGIN {printf "%-48s %11.0f%%\n", t, (r > 0) ? 100 * n / r : 0}'; }
ratio "nginx WebSocket / redis" "$wm" "$rm"
ratio "nginx REST h2c / redis" "$n2m" "$rm"
ratio "nginx REST HTTP/1.1 / redis" "$nm" "$rm"
ratio "nginx REST h2c / h2c floor" "$n2m" "$f2m"
ratio "nginx REST HTTP/1.1 / HTTP/1.1 floor" "$nm" "$fm"

# the same, one line each for bench/scenario_4.sh (make bench): the median
# rates, every run's rates (comma-separated), and the median CPU us per
# decision as redis/nginx/load
keys=(rb ws rest2 rest floor2 floor)
names=(redis_benchmark ws rest_h2 rest_h1 floor_h2 floor_h1)
line_of() {
    local i out="ratelimit: $1 runs=$runs"
    for i in "${!keys[@]}"; do out="$out ${names[$i]}=$("$2" "${keys[$i]}")"; done
    echo "$out"
}
all_runs() { tr ' ' '\n' <<< "${runs_of[$1]}" | grep . | paste -sd, -; }
cpu_of() { echo "$(med "${1}_cpu" 1)/$(med "${1}_cpu" 2)/$(med "${1}_cpu" 3)"; }
echo
line_of median med
line_of runs all_runs
line_of cpu_us cpu_of

# CPU per decision says what the rates would be on two cores of our own:
# Redis runs the script on one core at most, and everything shares the two
# (rate <= 1e6 / redis, and <= 2e6 / (redis + nginx + load)); in production
# the clients run elsewhere, so the last column leaves the load out
printf '\n%-34s %6s %6s %6s %6s %11s %11s\n' "CPU us per decision (median)" redis nginx load total \
    "2-core max" "w/o client"
for k in rb ws rest2 rest floor2 floor; do
    a=$(med "${k}_cpu" 1) b=$(med "${k}_cpu" 2) c=$(med "${k}_cpu" 3)
    case $k in
        rb) name="redis-benchmark" ;; ws) name="through nginx, WebSocket" ;;
        rest2) name="through nginx, REST h2c" ;; rest) name="through nginx, REST HTTP/1.1" ;;
        floor2) name="h2c floor (per request)" ;; floor) name="HTTP/1.1 floor (per request)" ;;
    esac
    awk -v n="$name" -v a="$a" -v b="$b" -v c="$c" '
        function most(t) { m = t > 0 ? 2e6 / t : 0; if (a > 0 && 1e6 / a < m) m = 1e6 / a; return m }
        BEGIN { printf "%-34s %6d %6d %6d %6d %11d %11d\n", n, a, b, c, a + b + c, most(a + b + c), most(a + b) }'
done
