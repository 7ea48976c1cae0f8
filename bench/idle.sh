#!/usr/bin/env bash
# Idle connections on ONE node (issue 7): 10,000 then 100,000 authenticated
# WebSockets held on node a, pings answered through several ping intervals,
# a message delivered to every connection, and the worker memory each
# connection costs.  A measurement: it prints numbers and says PASS/FAIL for
# the checks (all open, none closed, pings answered, every message received
# in order); it asserts nothing about how large the numbers are.
#
#   bash bench/idle.sh [N ...]          (default: 10000 100000)
#   make bench-idle N="10000"
#
# Run with this stack's MINICHAT_PORT_OFFSET and MINICHAT_RUN exported; the
# stack is started if it is not running.  For the run, node a's nginx is
# replaced by a bench nginx on the same port with node a's configuration
# (so the relay-worker, Redis and MySQL are the stack's) and:
#   - WORKERS (7) workers of WORKER_CONNECTIONS (19000) each and
#     worker_rlimit_nofile 19500: a process may open 20,000 files here and
#     that cannot be raised, so 100,000 connections need several workers;
#   - `listen ... reuseport backlog=4096`: the kernel spreads the
#     connections over the workers (one listen queue each), and a burst of
#     SYNs waits in the queue instead of being dropped;
#   - no minichat_limit_connections / minichat_limit_user_connections (the
#     load comes from a few loopback addresses on purpose);
#   - minichat_ping_interval PING (30s, the production default; the dev
#     stack's is 5s) and a session TTL of two of them: every connection
#     refreshes its session in Redis once per interval, and 100,000 of them
#     at the dev stack's 5 s (20,000 session scripts a second) starve Redis
#     on a shared 2-core box until the workers drop their Redis connection
#     (and their clients with it) -- seen in the first runs;
#   - access_log off.
# Node a's own nginx is started again at the end (stack.sh start).
#
# A connect phase that outlasts CONNECT_TIMEOUT (900 s) holds and measures
# what opened, and the run says FAIL.  For each N, two runs of
# build/bin/loadgen:
#   1. idle: N connections of N users in no room; once all are open the
#      sum of the workers' Pss (/proc/PID/smaps_rollup) is taken again and
#      (after - before) / open is the memory per idle connection; held for
#      two ping intervals (and 5 s) after the last one opened, each
#      connection must answer a ping and none may be closed (the module
#      pings a client that answers every other interval: it checks silence
#      on its tick, and a pong that came just after one tick is less than
#      an interval old at the next);
# (MODES="idle deliver" by default; MODES=deliver runs only the second.)
#   2. deliver: N members in rooms of ROOM_SIZE (20; small rooms keep the
#      presence fan-out of N users coming online small), each room's owner
#      sends MESSAGES (3) after a hold of 5 s, all owners together
#      SEND_RATE (1000) sends a second, spread evenly (loadgen staggers the
#      rooms over the period); every member must get every message once
#      and in order (latency printed).  1,000 sends a second is the
#      brief's cross-node latency load; 100,000 owners at 1/s each would
#      be 5,000 a second on these 2 cores, beside 100,000 sockets.
# Kernel limits that matter are printed, and raised (with a line saying so)
# only where they would get in the way: net.core.somaxconn and
# net.ipv4.tcp_max_syn_backlog below 4096, nf_conntrack_max below 4 x N.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
off=${MINICHAT_PORT_OFFSET:-0}
run_dir=${MINICHAT_RUN:-$top/.run}
counts=${*:-10000 100000}
workers=${WORKERS:-7}
wconns=${WORKER_CONNECTIONS:-19000}
ping=${PING:-30}
room_size=${ROOM_SIZE:-20}
messages=${MESSAGES:-3}
send_rate=${SEND_RATE:-1000}
modes=${MODES:-idle deliver}
rate=${CONNECT_RATE:-2000}
connect_timeout=${CONNECT_TIMEOUT:-900}
port=$((8080 + off))
loadgen=$top/build/bin/loadgen
secret=$top/conf/dev-jwt-secret
bd=$run_dir/bench-idle
node_a=$run_dir/nginx-a

say() { printf 'idle: %s\n' "$*"; }
die() { printf 'idle: ERROR: %s\n' "$*" >&2; exit 1; }

[ -x "$loadgen" ] || die "$loadgen missing: run make (or make bench-tools) first"
for n in $counts; do
    [[ $n =~ ^[1-9][0-9]*$ ]] || die "connection counts must be positive integers, got \"$n\""
done

# --- the machine and its limits ----------------------------------------------
say "machine: $(nproc) cores, kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u '+%F %T UTC')"
say "open files per process: soft $(ulimit -Sn), hard $(ulimit -Hn) (nginx's worker_rlimit_nofile cannot pass the hard one)"
max_n=0
for n in $counts; do [ "$n" -gt "$max_n" ] && max_n=$n; done
read -r lo hi < /proc/sys/net/ipv4/ip_local_port_range
per_addr=$((hi - lo + 1))
say "net.ipv4.ip_local_port_range = $lo $hi: $per_addr ports per source address and destination;" \
    "loadgen spreads $max_n connections over $(( (max_n + 19999) / 20000 )) source addresses from 127.0.0.2"
# raise_sysctl NAME MIN: sets NAME to MIN when it is below, saying so
raise_sysctl() {
    local f=/proc/sys/${1//.//} v
    [ -r "$f" ] || { say "$1: not present"; return 0; }
    v=$(cat "$f")
    if [ "$v" -lt "$2" ]; then
        if echo "$2" > "$f" 2>/dev/null; then
            say "$1 = $v: raised to $2 for this run (sysctl -w $1=$v puts it back)"
        else
            say "$1 = $v: below $2 and cannot be raised here; SYNs may be dropped under a burst"
        fi
    else
        say "$1 = $v"
    fi
}
raise_sysctl net.core.somaxconn 4096
raise_sysctl net.ipv4.tcp_max_syn_backlog 4096
if [ -r /proc/sys/net/netfilter/nf_conntrack_max ]; then
    raise_sysctl net.netfilter.nf_conntrack_max $((4 * max_n))
    say "net.netfilter.nf_conntrack_count = $(cat /proc/sys/net/netfilter/nf_conntrack_count) (conntrack is loaded)"
else
    say "nf_conntrack: not loaded (no table to fill)"
fi
say "fs.file-nr = $(cat /proc/sys/fs/file-nr) (open, free, max files of the whole system)"

# --- the stack and the bench nginx --------------------------------------------
bash "$top/scripts/stack.sh" start > /dev/null || die "the stack did not start (bash scripts/stack.sh start)"
[ -f "$node_a/nginx.conf" ] || die "$node_a/nginx.conf missing: is this the stack of MINICHAT_RUN=$run_dir?"

# our_nginx PIDFILE CONF: the master's pid when it runs that configuration
our_nginx() {
    local p
    p=$(tr -dc '0-9' < "$1" 2>/dev/null) || return 0
    [ -n "$p" ] && tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | grep -qF -- "-c $2 " && echo "$p"
    return 0
}
# quit_nginx PIDFILE CONF: graceful stop, waited for
quit_nginx() {
    local p
    p=$(our_nginx "$1" "$2")
    [ -n "$p" ] || return 0
    kill -QUIT "$p"
    for _ in $(seq 300); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
    say "nginx $p still running 30 s after QUIT"
}
lg=""
restore() {
    if [ -n "$lg" ] && kill -0 "$lg" 2>/dev/null; then
        kill -TERM "$lg" 2>/dev/null || true   # the load generator stops its runners and reports
        wait "$lg" 2>/dev/null || true
    fi
    quit_nginx "$bd/nginx.pid" "$bd/nginx.conf"
    if grep -E '\[(alert|crit|emerg)\]' "$bd/error.log" 2>/dev/null | head -5 | grep -q .; then
        say "the bench nginx logged these (all in $bd/error.log):"
        grep -E '\[(alert|crit|emerg)\]' "$bd/error.log" | head -5
    fi
    bash "$top/scripts/stack.sh" start > /dev/null && say "node a's own nginx is back" \
        || say "node a's nginx did not come back: bash scripts/stack.sh start"
}

mkdir -p "$bd/tmp"
sed -e "s|^worker_processes .*|worker_processes $workers;|" \
    -e "s|^worker_rlimit_nofile .*|worker_rlimit_nofile 19500;|" \
    -e "s|^\( *\)worker_connections .*|\1worker_connections $wconns;|" \
    -e "s|^pid .*|pid $bd/nginx.pid;|" -e "s|^error_log .*|error_log $bd/error.log notice;|" \
    -e "s|access_log .*|access_log off;|" \
    -e "s|^\( *\)listen 127.0.0.1:$port;|\1listen 127.0.0.1:$port reuseport backlog=4096;|" \
    -e '/minichat_limit_connections /d' -e '/minichat_limit_user_connections /d' \
    -e "s|^\( *\)minichat_ping_interval .*|\1minichat_ping_interval ${ping}s;|" \
    -e "s|^\( *\)minichat_session_ttl .*|\1minichat_session_ttl $((2 * ping))s;|" \
    -e "s|$node_a/tmp/|$bd/tmp/|g" \
    "$node_a/nginx.conf" > "$bd/nginx.conf"
grep -q "reuseport backlog=4096" "$bd/nginx.conf" || die "node a's listen line not found in $node_a/nginx.conf"
rm -f "$bd/error.log"
/usr/sbin/nginx -p "$bd" -c "$bd/nginx.conf" -e "$bd/error.log" -t > "$bd/configtest.log" 2>&1 \
    || { cat "$bd/configtest.log"; die "nginx -t rejects $bd/nginx.conf"; }

trap restore EXIT
trap 'exit 143' TERM INT
quit_nginx "$node_a/nginx.pid" "$node_a/nginx.conf"
/usr/sbin/nginx -p "$bd" -c "$bd/nginx.conf" -e "$bd/error.log" || die "the bench nginx did not start"
for _ in $(seq 100); do
    curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/healthz" 2>/dev/null && break
    sleep 0.1
done
master=$(our_nginx "$bd/nginx.pid" "$bd/nginx.conf")
[ -n "$master" ] || die "the bench nginx is not running (see $bd/error.log)"
say "bench nginx: $workers workers x $wconns connections on 127.0.0.1:$port, ping ${ping}s (node a's configuration otherwise)"

# workers_pss: the sum of the workers' Pss in kB
workers_pss() {
    local w t=0 k
    for w in $(pgrep -P "$master"); do
        k=$(awk '/^Pss:/ {print $2}' "/proc/$w/smaps_rollup" 2>/dev/null || echo 0)
        t=$((t + ${k:-0}))
    done
    echo "$t"
}
# per_worker: each worker's connections (sockets) right now
per_worker() {
    local w out=""
    for w in $(pgrep -P "$master"); do
        out="$out $(find /proc/$w/fd -lname 'socket:*' 2>/dev/null | wc -l)"
    done
    echo "${out# }"
}

summary=()
status=0
for n in $counts; do
  open_s="" min_pings="" per_conn="" lg_mem="" received="" lat=""
  if [[ " $modes " == *" idle "* ]]; then
    say "== $n idle connections"
    before=$(workers_pss)
    opened=0
    ready=$bd/ready
    rm -f "$ready"
    "$loadgen" idle --port "$port" --secret-file "$secret" --conns "$n" --connect-rate "$rate" \
        --inflight 64 --handshake-timeout 60 --connect-timeout "$connect_timeout" --hold $((2 * ping + 5)) --min-pings 1 --progress 5 --ready-file "$ready" > "$bd/idle-$n.log" 2>&1 &
    lg=$!
    while kill -0 "$lg" 2>/dev/null && [ ! -f "$ready" ]; do sleep 0.5; done
    after=""
    if [ -f "$ready" ]; then
        sleep 3   # the last hellos and session writes settle
        after=$(workers_pss)
        opened=$(awk '{print $2}' "$ready")
        say "sockets per worker: $(per_worker)"
    fi
    rc=0
    wait "$lg" || rc=$?
    lg=""
    grep -E '^loadgen: (connected|result|memory|PASS|FAIL)' "$bd/idle-$n.log" | sed 's/^/idle: /'
    [ "$rc" -eq 0 ] || { status=1; say "idle run FAILED (log: $bd/idle-$n.log)"; tail -5 "$bd/idle-$n.log"; }
    per_conn=""
    if [ -n "$after" ] && [ "${opened:-0}" -gt 0 ]; then
        per_conn=$(( (after - before) * 1024 / opened ))
        say "workers' Pss: $before kB before, $after kB with $opened open: $per_conn bytes per connection"
    fi
    lg_mem=$(sed -n 's/^loadgen: memory loadgen_pss_kb=\([0-9]*\) per_conn_bytes=\([0-9]*\)/\1 kB (\2 B per connection)/p' \
        "$bd/idle-$n.log")
    open_s=$(sed -n 's/^loadgen: connected: .* in \([0-9.]*\) s.*/\1/p' "$bd/idle-$n.log")
    min_pings=$(sed -n 's/^loadgen: result .* min_pings=\([0-9]*\) .*/\1/p' "$bd/idle-$n.log")
  fi
  if [[ " $modes " == *" deliver "* ]]; then

    rooms=$(( (n + room_size - 1) / room_size ))
    msg_rate=$(awk -v s="$send_rate" -v r="$rooms" 'BEGIN { printf "%.4f", s / r }')
    say "== $n members in $rooms rooms of $room_size, $messages messages per room at $msg_rate/s each ($send_rate sends/s in all)"
    "$loadgen" deliver --port "$port" --secret-file "$secret" --conns "$n" --room-size "$room_size" \
        --messages "$messages" --msg-rate "$msg_rate" --connect-rate "$rate" --inflight 64 --handshake-timeout 60 --hold 5 \
        --connect-timeout "$connect_timeout" \
        --wait 30 --progress 5 > "$bd/deliver-$n.log" 2>&1 &
    lg=$!
    wait "$lg" || { status=1; say "deliver run FAILED (log: $bd/deliver-$n.log)"; }
    lg=""
    grep -E '^loadgen: (connected|result|deliver|latency|PASS|FAIL)' "$bd/deliver-$n.log" | sed 's/^/idle: /'
    received=$(sed -n 's/^loadgen: deliver .* expected=\([0-9]*\) received=\([0-9]*\) .*/\2 of \1/p' "$bd/deliver-$n.log")
    lat=$(sed -n 's/^loadgen: latency_us p50=\([0-9]*\) p99=\([0-9]*\) p99.9=\([0-9]*\).*/\1 \/ \2 \/ \3/p' "$bd/deliver-$n.log")
  fi
    summary+=("| $n | ${open_s:-?} s | ${min_pings:-?} | ${per_conn:-?} B | ${lg_mem:-?} | ${received:-?} | ${lat:-?} |")
done

say "machine: $(nproc) cores, kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| connections | all open in | pings answered (fewest) | worker Pss per connection | loadgen Pss | messages received | latency p50 / p99 / p99.9 (us) |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${summary[@]}"
echo
[ "$status" -eq 0 ] && say "PASS" || say "FAIL"
exit "$status"
