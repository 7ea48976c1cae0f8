# Scenario 4 of make bench, rate-limit decisions per second: sourced by
# bench/bench.sh, whose helpers and settings it uses (say, field, the
# records file).
#
# bench/ratelimit.sh measures it: lua/limit.lua run by redis-benchmark
# (EVALSHA, random user keys, 256 clients pipelined 16 deep) against the
# same script reached through a bench nginx of its own (node a's
# configuration on 8089/8090 + offset): WebSocket sends refused by the
# limit, REST over h2c (16 streams per connection) and over HTTP/1.1
# (pipelined), and the two HTTP floors (a 404 before the token is read).
# RL_RUNS (3) runs of RL_SECONDS (5) s per load, medians; CPU microseconds
# per decision of Redis, the nginx workers and the load generator.  One
# record; the report gives nginx / redis-benchmark (the brief's target is
# >= 80%).  The floor and Centrifugo have no such limiter (the report says
# why), so they have no column of figures.  --smoke: one run of 1 s.

scenario_4() {
    local log=$work/ratelimit.log runs secs rc=0 k w v first=1
    if [ "$smoke" = 1 ]; then
        runs=${RL_RUNS:-1} secs=${RL_SECONDS:-1}
    else
        runs=${RL_RUNS:-3} secs=${RL_SECONDS:-5}
    fi
    [[ $runs =~ ^[1-9][0-9]?$ ]] || die "RL_RUNS must be 1..99, got \"$runs\""
    [[ $secs =~ ^[1-9][0-9]?$ ]] || die "RL_SECONDS must be 1..99, got \"$secs\""
    start_minichat   # the stack up and without TLS (its bench nginx idles meanwhile)
    say "[4] rate limit: bench/ratelimit.sh, $runs run(s) of 6 loads x ${secs}s (redis-benchmark, WebSocket, REST h2c and HTTP/1.1, two HTTP floors)"
    # its per-run lines (stderr) are the progress
    SECONDS_PER_RUN=$secs bash "$top/bench/ratelimit.sh" "$runs" 2>&1 > "$log" | sed -u 's/^/bench:     /' || rc=$?
    [ "$rc" = 0 ] || { tail -5 "$log" >&2; die "bench/ratelimit.sh failed (log: $log)"; }
    {
        printf '{"scenario":4,"system":"minichat","runs":%s,"seconds":%s' "$runs" "$secs"
        for k in median runs cpu_us; do
            printf ',"%s":{' "$([ "$k" = runs ] && echo runs_each || echo "$k")"
            first=1
            for w in redis_benchmark ws rest_h2 rest_h1 floor_h2 floor_h1; do
                [ $first = 1 ] || printf ','
                first=0
                v=$(field "$log" "$k" "$w" ratelimit:)
                case $k in
                    median) printf '"%s":%s' "$w" "$v" ;;
                    runs) printf '"%s":[%s]' "$w" "$([ "$v" = null ] || echo "$v")" ;;
                    cpu_us) [ "$v" = null ] && printf '"%s":null' "$w" \
                        || printf '"%s":{"redis":%s,"nginx":%s,"load":%s}' "$w" ${v//\// } ;;
                esac
            done
            printf '}'
        done
        printf ',"log":"%s"}\n' "$log"
    } >> "$records"
    say "[4] $(python3 "$top/bench/report.py" --line "$(tail -1 "$records")")"
}
