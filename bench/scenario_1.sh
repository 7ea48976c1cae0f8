# Scenario 1 of make bench, idle connections: sourced by bench/bench.sh,
# whose helpers and settings it uses (say, pids_of, start_floor,
# start_minichat, field, the records file, $loadgen, the ports).
#
# For each system, IDLE_CONNS (10,000) authenticated connections of as many
# users, in no room, opened by `build/bin/loadgen idle` and held IDLE_HOLD
# (35) seconds after the last one opened; the memory of the processes that
# hold the clients' sockets is taken before the load generator starts
# (after IDLE_WARMUP, 200, connections opened and closed, and 2 s) and
# again 3 s before the hold ends (the pings of the hold answered; half-way
# through a hold of 6 s or less), and
# (after - before) / open is the memory per idle connection:
#   MiniChat   the bench nginx's workers (node a's configuration: 2 workers,
#              ping every 5 s); its Redis is measured the same way on a
#              row of its own (sessions and presence live there);
#   floor      build/bin/floor (it sends no pings);
#   Centrifugo its one process (bench/centrifugo/config.json: history and
#              recovery on in the room namespace, ping every 25 s).
# Memory is Pss and RSS from /proc/PID/smaps_rollup, summed over the
# processes.  A run passes when every connection opened, none was closed,
# and each answered at least one ping (MiniChat, Centrifugo).  The hold
# spans one Centrifugo ping interval and several of MiniChat's.
#
# Then MiniChat alone at 100,000 connections through bench/idle.sh (node
# a's nginx replaced for the run by one of 7 workers with reuseport, several
# source addresses; ~5 minutes); IDLE_100K=0 skips it, and the table says
# so.  --smoke: 50 connections held 2 s, MiniChat and the floor, no pings
# asked for, no 100k.

# mem_kb FIELD group:pid...: the sum of FIELD (Pss or Rss, kB) over the
# processes' /proc/PID/smaps_rollup
mem_kb() {
    local f=$1 w t=0 k
    shift
    for w in "$@"; do
        k=$(awk -v f="$f:" '$1 == f {print $2}' "/proc/${w#*:}/smaps_rollup" 2>/dev/null) || k=0
        t=$((t + ${k:-0}))
    done
    echo "$t"
}

# group_of GROUP group:pid...: the words of that group
group_of() {
    local g=$1 w
    shift
    for w in "$@"; do [ "${w%%:*}" = "$g" ] && echo "$w"; done
    return 0
}

# progress_from LOG: the load generator's last line, when it is new
last_progress=""
progress_from() {
    local l
    l=$(tail -1 "$1" 2>/dev/null | grep '^loadgen: ') || return 0
    [ "$l" != "$last_progress" ] || return 0
    last_progress=$l
    echo "bench:     ${l#loadgen: }"
}

# idle_run SYSTEM PORT PATH PROTO MIN_PINGS STEP: one loadgen idle run,
# one record
idle_run() {
    local sys=$1 port=$2 path=$3 proto=$4 min_pings=$5 step=$6
    local log=$work/idle-$sys.log ready=$work/idle-ready lpid open="" i front=${FRONT_OF[$1]}
    local -a all procs redis
    local pss0 rss0 pss1="" rss1="" rp0=0 rp1=0 pass
    # when: 3 s before the hold ends, or half-way through a short one
    local at=$((idle_hold > 6 ? idle_hold - 3 : idle_hold / 2))
    rm -f "$ready"
    mapfile -t all < <(pids_of "$sys")
    mapfile -t procs < <(group_of "$front" "${all[@]}")
    mapfile -t redis < <(group_of redis "${all[@]}")
    [ "${#procs[@]}" -gt 0 ] && [ -n "${procs[0]#*:}" ] || die "no $front process of $sys to measure"
    say "[$step] idle $sys: $idle_conns connections, held ${idle_hold}s (${#procs[@]} $front process(es) measured)"
    if [ "$idle_warmup" -gt 0 ]; then
        # one-time allocations (a fresh Centrifugo's runtime, a worker's
        # first Redis scripts) are not the connections'
        "$loadgen" idle --proto "$proto" --port "$port" --path "$path" --secret-file "$secret" \
            --conns "$idle_warmup" --hold 0 > "$work/idle-$sys-warmup.log" 2>&1 \
            || say "[$step]     the warm-up failed ($work/idle-$sys-warmup.log)"
    fi
    sleep "$([ "$idle_warmup" -gt 0 ] && echo 2 || echo 0.5)"
    pss0=$(mem_kb Pss "${procs[@]}") rss0=$(mem_kb Rss "${procs[@]}")
    [ "${#redis[@]}" -gt 0 ] && rp0=$(mem_kb Pss "${redis[@]}")
    "$loadgen" idle --proto "$proto" --port "$port" --path "$path" --secret-file "$secret" --conns "$idle_conns" \
        --hold "$idle_hold" --min-pings "$min_pings" --ready-file "$ready" --progress 5 > "$log" 2>&1 &
    lpid=$!
    i=0
    while [ ! -e "$ready" ] && kill -0 "$lpid" 2>/dev/null; do
        sleep 0.2
        i=$((i + 1))
        [ $((i % 25)) = 0 ] && progress_from "$log"
    done
    if [ -e "$ready" ]; then
        open=$(awk '{print $2}' "$ready")
        say "[$step]     all open ($open); measuring $at s into the hold"
        sleep "$at"
        if kill -0 "$lpid" 2>/dev/null; then
            pss1=$(mem_kb Pss "${procs[@]}") rss1=$(mem_kb Rss "${procs[@]}")
            [ "${#redis[@]}" -gt 0 ] && rp1=$(mem_kb Pss "${redis[@]}")
        fi
    fi
    wait "$lpid" || true
    grep -q '^loadgen: PASS' "$log" && pass=true || pass=false
    {
        printf '{"scenario":1,"system":"%s","conns":%s,"hold_s":%s,"measured_at_s":%s,"min_pings_asked":%s,"pass":%s' \
            "$sys" "$idle_conns" "$idle_hold" "$at" "$min_pings" "$pass"
        printf ',"open":%s,"failed":%s,"closed":%s,"pings":%s,"min_pings":%s' \
            "$(field "$log" result open)" "$(field "$log" result failed)" "$(field "$log" result closed)" \
            "$(field "$log" result pings)" "$(field "$log" result min_pings)"
        printf ',"measured":"%s","procs":%d,"pss_before_kb":%s,"pss_after_kb":%s,"rss_before_kb":%s,"rss_after_kb":%s' \
            "$front" "${#procs[@]}" "$pss0" "${pss1:-null}" "$rss0" "${rss1:-null}"
        if [ "${#redis[@]}" -gt 0 ] && [ -n "$pss1" ]; then
            printf ',"redis_pss_before_kb":%s,"redis_pss_after_kb":%s' "$rp0" "$rp1"
        fi
        printf ',"loadgen_pss_kb":%s,"log":"%s"}\n' "$(field "$log" memory loadgen_pss_kb)" "$log"
    } >> "$records"
    say "[$step] $(python3 "$top/bench/report.py" --line "$(tail -1 "$records")")"
}

# idle_100k: MiniChat alone at 100,000 through bench/idle.sh, one record
idle_100k() {
    local log=$work/idle-100k.log lg_log=$run_dir/bench-idle/idle-100000.log ipid i rc=0 pass
    if [ "${IDLE_100K:-1}" = 0 ]; then
        say "idle minichat at 100,000: skipped (IDLE_100K=0)"
        printf '{"scenario":1,"system":"minichat","conns":100000,"skipped":"IDLE_100K=0"}\n' >> "$records"
        return 0
    fi
    say "idle minichat at 100,000: bench/idle.sh (7 workers, reuseport, ~5 minutes; IDLE_100K=0 skips it)"
    rm -f "$lg_log"
    MODES=idle bash "$top/bench/idle.sh" 100000 > "$log" 2>&1 &
    ipid=$!
    i=0
    while kill -0 "$ipid" 2>/dev/null; do
        sleep 0.2
        i=$((i + 1))
        [ $((i % 50)) = 0 ] && progress_from "$lg_log"
    done
    wait "$ipid" || rc=$?
    grep -E "^idle: (workers' Pss|PASS|FAIL)" "$log" | sed 's/^idle: /bench:     /' || true
    [ "$rc" = 0 ] && pass=true || pass=false
    {
        printf '{"scenario":1,"system":"minichat","conns":100000,"via":"bench/idle.sh","pass":%s' "$pass"
        printf ',"open":%s,"failed":%s,"closed":%s,"pings":%s,"min_pings":%s' \
            "$(field "$lg_log" result open)" "$(field "$lg_log" result failed)" "$(field "$lg_log" result closed)" \
            "$(field "$lg_log" result pings)" "$(field "$lg_log" result min_pings)"
        sed -n "s/^idle: workers' Pss: \([0-9]*\) kB before, \([0-9]*\) kB with .*/,\"pss_before_kb\":\1,\"pss_after_kb\":\2/p" \
            "$log" | tr -d '\n'
        printf ',"open_s":%s,"measured":"nginx","procs":%s,"log":"%s"}\n' \
            "$(sed -n 's/^loadgen: connected: .* in \([0-9.]*\) s.*/\1/p' "$lg_log" 2>/dev/null | head -1 | grep . || echo null)" \
            "${WORKERS:-7}" "$log"
    } >> "$records"
    say "$(python3 "$top/bench/report.py" --line "$(tail -1 "$records")")"
}

declare -A FRONT_OF=([minichat]=nginx [floor]=floor [centrifugo]=centrifugo)

scenario_1() {
    local systems="minichat floor" n=0 total sys
    if [ "$smoke" = 1 ]; then
        idle_conns=${IDLE_CONNS:-50} idle_hold=${IDLE_HOLD:-2} idle_warmup=0
    else
        idle_conns=${IDLE_CONNS:-10000} idle_hold=${IDLE_HOLD:-35} idle_warmup=${IDLE_WARMUP:-200}
    fi
    [[ $idle_warmup =~ ^[0-9]+$ ]] && [ "$idle_warmup" -le 1000 ] || die "IDLE_WARMUP must be 0..1000, got \"$idle_warmup\""
    [[ $idle_conns =~ ^[1-9][0-9]*$ ]] && [ "$idle_conns" -le 19000 ] \
        || die "IDLE_CONNS must be 1..19000 (one nginx worker's share, the floor's --max-conns), got \"$idle_conns\""
    [[ $idle_hold =~ ^[1-9][0-9]*$ ]] || die "IDLE_HOLD must be a positive number of seconds, got \"$idle_hold\""
    start_floor
    start_minichat
    [ "$smoke" = 0 ] && start_centrifugo 1 && systems="$systems centrifugo"
    total=$(wc -w <<< "$systems")
    for sys in $systems; do
        n=$((n + 1))
        case $sys in
            minichat) idle_run minichat "$mc_port" /ws minichat "$([ "$smoke" = 1 ] && echo 0 || echo 1)" "$n/$total" ;;
            floor) idle_run floor "$floor_port" /ws minichat 0 "$n/$total" ;;
            centrifugo) idle_run centrifugo "$cf_port" /connection/websocket centrifugo 1 "$n/$total" ;;
        esac
    done
    [ "$smoke" = 1 ] || idle_100k
}
