#!/usr/bin/env bash
# make bench: issue 9's scenarios against MiniChat, the floor (bench/floor,
# a raw epoll broadcaster of our own) and Centrifugo v6 in the same run,
# with the systems side by side and their ratios in one table.
#
#   bash bench/bench.sh [--smoke] [--out DIR] [--scenarios "1 2 3 4 5"]
#   make bench                 (the full run; results in bench/results/)
#
# Run with this stack's MINICHAT_PORT_OFFSET and MINICHAT_RUN exported; the
# stack is started when node a does not answer.  Each scenario is a
# function; what it measures goes, one JSON object a line, into a records
# file that bench/report.py turns into the table (printed), and
# <out>/<date>-<host>.json and .md, with the machine noted (nproc, CPU
# model, kernel, load average at the start and the end).
#
# Scenario 2, fan-out: one room of MEMBERS (1,000) receiving members plus
# its owner, who sends MESSAGES (1,000) at each of RATES (50 100 200 400)
# messages a second, S2_RUNS loadgen runs (bench/loadgen, deliver mode; 3,
# the systems taking turns; the table shows medians) per system and rate.
# Per run: deliveries a second (deliveries over the time
# from the first send to the last delivery), delivered of offered, p50/p99
# send->receive latency, and the CPU time of every process on the path per
# million deliveries (/proc/PID/stat utime + stime, from the moment every
# connection is open to the end of the run, connection closes included):
#   MiniChat   a bench nginx with node a's configuration on its own port
#              (8093 + offset) minus every minichat_limit_* line (the dev
#              stack's 50 messages/s per sender would refuse the load) and
#              access_log off, on the stack's relay-worker a, Redis, Kafka,
#              roomlist-consumer and MariaDB primary: all counted ("path"),
#              the nginx workers also on their own ("front");
#   floor      build/bin/floor on 8092 + offset: the one process;
#   Centrifugo when bench/centrifugo/run.sh and a binary under
#              .cache/centrifugo/ exist (skipped with a note otherwise):
#              `run.sh start` (127.0.0.1:18000 + offset, or
#              MINICHAT_CENTRIFUGO_PORT; tokens signed with
#              conf/dev-jwt-secret), the process of its pid file
#              ($MINICHAT_RUN/centrifugo/centrifugo.pid), `run.sh stop`
#              at the end.
# Scenario 1, idle memory per connection, is bench/scenario_1.sh,
# scenario 3, cross-node latency, bench/scenario_3.sh, scenario 4,
# rate-limit decisions against redis-benchmark, bench/scenario_4.sh, and
# scenario 5, persistence and history at depth, bench/scenario_5.sh (each
# says what it measures).
#
# --smoke (make test, tests/integration/test_bench_smoke.py): scenario 1
# with 50 connections held 2 s, scenario 2 with 20 members, 10 messages at
# 20/s, MiniChat and the floor, and scenario 3, 100 messages at 100/s,
# MiniChat only: a check that the tool works, not a
# measurement.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
off=${MINICHAT_PORT_OFFSET:-0}
run_dir=${MINICHAT_RUN:-$top/.run}
out_dir=$top/bench/results
scenarios="1 2 3 4 5"
smoke=0
while [ $# -gt 0 ]; do
    case $1 in
        --smoke) smoke=1; shift ;;
        --out) out_dir=${2:?--out needs a directory}; shift 2 ;;
        --scenarios) scenarios=${2:?--scenarios needs a list}; shift 2 ;;
        *) echo "usage: bench.sh [--smoke] [--out DIR] [--scenarios \"1 2 3 4 5\"]" >&2; exit 2 ;;
    esac
done
if [ "$smoke" = 1 ]; then
    members=${MEMBERS:-20} messages=${MESSAGES:-10} rates=${RATES:-20} scenarios="1 2 3"
    s2_runs=${S2_RUNS:-1}
else
    members=${MEMBERS:-1000} messages=${MESSAGES:-1000} rates=${RATES:-50 100 200 400}
    s2_runs=${S2_RUNS:-3}
fi
# scenario 2's runs per system and rate, alternated (the table shows their
# medians): three by default, since one run's p99 can be off by a third on
# a shared box and the p99 target is a ratio to the floor's
case $s2_runs in ''|*[!0-9]*|0) echo "bench: S2_RUNS must be a whole number of at least 1" >&2; exit 2 ;; esac
wait_s=${WAIT:-15}
secret=$top/conf/dev-jwt-secret
loadgen=$top/build/bin/loadgen
floor_bin=$top/build/bin/floor
node_a_port=$((8080 + off))
floor_port=$((8092 + off))
mc_port=$((8093 + off))
# bench/centrifugo/run.sh's port and key (the dev stack's JWT secret)
cf_port=${MINICHAT_CENTRIFUGO_PORT:-$((18000 + off))}
cf_secret=$secret
work=$run_dir/bench
records=$work/records.jsonl
hz=$(getconf CLK_TCK)

say() { printf 'bench: %s\n' "$*"; }
die() { printf 'bench: ERROR: %s\n' "$*" >&2; exit 1; }

[ -x "$loadgen" ] && [ -x "$floor_bin" ] || die "build/bin/loadgen or build/bin/floor missing: make all"
mkdir -p "$work" "$out_dir"
: > "$records"

# --- the machine ------------------------------------------------------------
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
machine() {
    printf '{"host":"%s","nproc":%d,"model_name":"%s","kernel":"%s","loadavg_%s":"%s"}\n' \
        "$(hostname)" "$(nproc)" "$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1 | tr -d '"\\')" \
        "$(uname -r)" "$1" "$(loadavg)"
}
machine start > "$work/machine-start.json"
say "machine: $(nproc) CPUs, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), kernel $(uname -r)," \
    "load average $(loadavg)"

# --- CPU time of processes --------------------------------------------------
# cpu_ms PID...: user + system time so far, in ms (the comm field may hold
# spaces: fields are counted after its closing parenthesis)
cpu_ms() {
    local t=0 p v
    for p in "$@"; do
        v=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}') || v=0
        t=$((t + ${v:-0}))
    done
    echo $((t * 1000 / hz))
}
pidfile() { [ -s "$1" ] && tr -dc '0-9' < "$1" || true; }
# live PIDFILE PATTERN: the pid in the file when it runs a command line
# holding PATTERN (a stale file may name a recycled pid)
live() {
    local p
    p=$(pidfile "$1")
    [ -n "$p" ] && tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | grep -qF -- "$2" && echo "$p"
    return 0
}
listener_pid() { ss -Hltnp "sport = :$1" 2>/dev/null | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -1; }

# --- the systems --------------------------------------------------------------
cleanup() {
    local p
    p=$(pidfile "$work/floor.pid"); [ -n "$p" ] && kill "$p" 2>/dev/null || true
    for p in "$work"/nginx*/nginx.pid; do
        p=$(pidfile "$p")
        if [ -n "$p" ] && kill -QUIT "$p" 2>/dev/null; then
            for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        fi
    done
    [ "${cf_started:-0}" = 1 ] && bash "$top/bench/centrifugo/run.sh" stop > /dev/null 2>&1 || true
    [ "${cf2_started:-0}" = 1 ] && NODES=2 bash "$top/bench/centrifugo/run.sh" stop > /dev/null 2>&1 || true
    rm -f "$work/floor.pid"
}
trap cleanup EXIT

# start_floor, start_minichat: idempotent, so that scenarios share them
start_floor() {
    [ -n "$(live "$work/floor.pid" "$floor_bin")" ] && return 0
    "$floor_bin" --port "$floor_port" --secret-file "$secret" > "$work/floor.log" 2>&1 &
    echo $! > "$work/floor.pid"
    for _ in $(seq 50); do grep -q '^floor: listening' "$work/floor.log" && return 0; sleep 0.1; done
    cat "$work/floor.log" >&2
    die "the floor did not start"
}

# start_minichat [NODE PORT]: a bench nginx: NODE's configuration (a, on
# mc_port), its own port, pid and logs (under $work/nginx, or nginx-NODE),
# no limits, no access log (the module, the relay-worker and Redis are the
# stack's)
start_minichat() {
    local node=${1:-a} port=${2:-$mc_port} bd=$work/nginx
    [ "$node" = a ] || bd=$work/nginx-$node
    [ -n "$(live "$bd/nginx.pid" "-c $bd/nginx.conf")" ] && return 0
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$node_a_port") 2>/dev/null; then
        say "starting the stack (scripts/stack.sh start)"
        bash "$top/scripts/stack.sh" start > "$work/stack.log" 2>&1 || { tail -20 "$work/stack.log" >&2; die "the stack did not start"; }
    fi
    if grep -Eq '^ *listen 127\.0\.0\.1:[0-9]+ ssl' "$run_dir/nginx-$node/nginx.conf"; then
        die "the stack runs with TLS (MINICHAT_TLS=1); the load generator speaks ws:// only"
    fi
    mkdir -p "$bd"
    : > "$bd/error.log"   # this run's lines only (the smoke test reads them)
    bench_nginx_conf "$run_dir/nginx-$node/nginx.conf" "$bd" "$port" > "$bd/nginx.conf"
    /usr/sbin/nginx -p "$bd" -c "$bd/nginx.conf" -e "$bd/error.log" || die "the bench nginx did not start ($bd/error.log)"
    for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0; sleep 0.1; done
    die "the bench nginx does not answer on $port"
}

# start_centrifugo SCENARIO: Centrifugo running (idempotent), or a record
# saying why SCENARIO skips it and a non-zero status
start_centrifugo() {
    if [ -f "$top/bench/centrifugo/run.sh" ] && ls "$top"/.cache/centrifugo/*/centrifugo > /dev/null 2>&1; then
        if bash "$top/bench/centrifugo/run.sh" start > "$work/centrifugo.log" 2>&1; then
            cf_started=1
            return 0
        fi
        say "Centrifugo did not start ($work/centrifugo.log): skipped"
        printf '{"scenario":%d,"system":"centrifugo","skipped":"did not start"}\n' "$1" >> "$records"
    else
        say "Centrifugo: no bench/centrifugo/run.sh or no binary under .cache/centrifugo/: skipped"
        printf '{"scenario":%d,"system":"centrifugo","skipped":"not built (bench/centrifugo/build.sh)"}\n' "$1" >> "$records"
    fi
    return 1
}

# The pids of a system, as "group:pid" words.
pids_of() {
    local p d
    case $1 in
        floor) echo "floor:$(pidfile "$work/floor.pid")" ;;
        centrifugo)
            p=$(live "$run_dir/centrifugo/centrifugo.pid" centrifugo)
            echo "centrifugo:${p:-$(listener_pid "$cf_port")}"
            ;;
        minichat)
            for p in $(pgrep -P "$(pidfile "$work/nginx/nginx.pid")"); do echo "nginx:$p"; done
            p=$(live "$run_dir/relay-a/relay.pid" relay-worker); [ -n "$p" ] && echo "relay:$p"
            for d in "$run_dir/redis" "$run_dir"/redis-cluster/*; do
                p=$(live "$d/redis.pid" redis-server); [ -n "$p" ] && echo "redis:$p"
            done
            p=$(live "$run_dir/kafka/kafka.pid" kafka.Kafka); [ -n "$p" ] && echo "kafka:$p"
            p=$(live "$run_dir/consumer/consumer.pid" roomlist-consumer); [ -n "$p" ] && echo "consumer:$p"
            p=$(live "$run_dir/mysql-primary/mysqld.pid" mariadbd); [ -n "$p" ] && echo "mysql:$p"
            ;;
    esac
    return 0
}

# cpu_groups "group:pid"...: prints "group=ms" per group.
cpu_groups() {
    local w g groups=""
    for w in "$@"; do g=${w%%:*}; case " $groups " in *" $g "*) ;; *) groups="$groups $g" ;; esac; done
    for g in $groups; do
        local pids=()
        for w in "$@"; do [ "${w%%:*}" = "$g" ] && pids+=("${w#*:}"); done
        echo "$g=$(cpu_ms "${pids[@]}")"
    done
}

# field LOG LINE KEY [PREFIX]: the value of KEY=... on the last `loadgen:
# LINE ...` line (PREFIX instead of loadgen:), or null (JSON) when there is
# none.
field() {
    awk -v line="$2" -v key="$3" -v pre="${4:-loadgen:}" '$1 == pre && $2 == line {
        for (i = 3; i <= NF; i++) if (index($i, key "=") == 1) v = substr($i, length(key) + 2) }
        END { print (v == "" ? "null" : v) }' "$1"
}

# follow_loadgen PID LOG: waits for the load generator, showing its latest
# progress line every 5 s while it runs
# measure_loadgen PID LOG PIDS_FN SYSTEM: once the load generator PID has
# written $ready (every connection open), the CPU of SYSTEM's processes
# (PIDS_FN SYSTEM) until it ends, with its progress lines; sets before[],
# after[] (cpu_groups) and pass (true/false) for the caller's record
measure_loadgen() {
    local lpid=$1 log=$2 pids
    while [ ! -e "$ready" ] && kill -0 "$lpid" 2>/dev/null; do sleep 0.1; done
    mapfile -t pids < <("$3" "$4")
    mapfile -t before < <(cpu_groups "${pids[@]}")
    follow_loadgen "$lpid" "$log"
    mapfile -t after < <(cpu_groups "${pids[@]}")
    grep -q '^loadgen: PASS' "$log" && pass=true || pass=false
}

# cpu_json: the CPU ms each group spent between before[] and after[], as
# JSON members ("nginx":123,"redis":45)
cpu_json() {
    local i first=1
    for i in "${!after[@]}"; do
        [ $first = 1 ] || printf ','
        printf '"%s":%d' "${after[$i]%%=*}" $((${after[$i]#*=} - ${before[$i]#*=}))
        first=0
    done
}

follow_loadgen() {
    local i=0
    while kill -0 "$1" 2>/dev/null; do
        sleep 0.2
        i=$((i + 1))
        if [ $((i % 25)) = 0 ]; then
            tail -1 "$2" | grep '^loadgen: ' | sed 's/^loadgen: /bench:     /' || true
        fi
    done
    wait "$1" || true
}

# fanout_run SYSTEM PORT PATH PROTO SECRET RATE N/TOTAL ROUND: one loadgen
# run, one record.
fanout_run() {
    local sys=$1 port=$2 path=$3 proto=$4 sec=$5 rate=$6 step=$7 round=$8
    local log=$work/fanout-$sys-$rate-$round.log ready=$work/ready pass
    local -a before after
    rm -f "$ready"
    say "[$step] fan-out $sys: $members members, $messages messages at $rate/s"
    "$loadgen" deliver --proto "$proto" --port "$port" --path "$path" --secret-file "$sec" \
        --conns "$members" --room-size "$members" --messages "$messages" --msg-rate "$rate" \
        --hold 2 --wait "$wait_s" --ready-file "$ready" --progress 5 > "$log" 2>&1 &
    measure_loadgen $! "$log" pids_of "$sys"
    {
        printf '{"scenario":2,"system":"%s","rate":%s,"round":%s,"members":%s,"messages":%s,"pass":%s' \
            "$sys" "$rate" "$round" "$members" "$messages" "$pass"
        printf ',"sent":%s,"acked":%s,"offered":%s,"delivered":%s,"out_of_order":%s' \
            "$(field "$log" deliver sent)" "$(field "$log" deliver acked)" "$(field "$log" deliver expected)" \
            "$(field "$log" deliver received)" "$(field "$log" deliver out_of_order)"
        printf ',"deliveries_per_s":%s,"span_ms":%s,"p50_us":%s,"p99_us":%s,"p999_us":%s,"cpu_ms":{' \
            "$(field "$log" rate deliveries_per_s)" "$(field "$log" rate span_ms)" "$(field "$log" latency_us p50)" \
            "$(field "$log" latency_us p99)" "$(field "$log" latency_us p99.9)"
        cpu_json
        printf '},"log":"%s"}\n' "$log"
    } >> "$records"
    say "[$step] $(python3 "$top/bench/report.py" --line "$(tail -1 "$records")")"
}

scenario_2() {
    local systems="minichat floor" n=0 total sys rate
    start_floor
    start_minichat
    if [ "$smoke" = 0 ] && [ "${S2_CENTRIFUGO:-1}" = 1 ]; then
        start_centrifugo 2 && systems="$systems centrifugo"
    fi
    total=$(( $(wc -w <<< "$systems") * $(wc -w <<< "$rates") * s2_runs ))
    for rate in $rates; do
        for round in $(seq "$s2_runs"); do
            for sys in $systems; do
                n=$((n + 1))
                case $sys in
                    minichat) fanout_run minichat "$mc_port" /ws minichat "$secret" "$rate" "$n/$total" "$round" ;;
                    floor) fanout_run floor "$floor_port" /ws minichat "$secret" "$rate" "$n/$total" "$round" ;;
                    centrifugo) fanout_run centrifugo "$cf_port" /connection/websocket centrifugo "$cf_secret" \
                        "$rate" "$n/$total" "$round" ;;
                esac
            done
        done
    done
    kill "$(pidfile "$work/floor.pid")" 2>/dev/null || true
    for _ in $(seq 50); do grep -q '^floor: result' "$work/floor.log" && break; sleep 0.1; done
    grep '^floor: result' "$work/floor.log" | sed 's/^floor: /bench: floor /' || true
}

not_yet() {
    printf '{"scenario":%d,"status":"not yet","note":"%s"}\n' "$1" "$2" >> "$records"
}
source "$top/bench/bench_nginx.sh"
source "$top/bench/scenario_1.sh"
source "$top/bench/scenario_3.sh"
source "$top/bench/scenario_4.sh"
source "$top/bench/scenario_5.sh"

for s in $scenarios; do
    case $s in
        1|2|3|4|5) "scenario_$s" ;;
        *) die "no scenario \"$s\" (1 to 5)" ;;
    esac
done

machine end > "$work/machine-end.json"
stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
base=$out_dir/$stamp-$(hostname)$([ "$smoke" = 1 ] && echo -smoke || true)
python3 "$top/bench/report.py" --records "$records" --machine "$work/machine-start.json" "$work/machine-end.json" \
    --mode "$([ "$smoke" = 1 ] && echo smoke || echo full)" --json "$base.json" --md "$base.md"
say "results: $base.json, $base.md"
