# Scenario 3 of make bench, cross-node latency (issue 9), sourced by
# bench/bench.sh, whose helpers and settings it uses (start_minichat,
# pidfile, live, cpu_groups, follow_loadgen, field, say, records, work).
#
# Two nodes of each system and a 2-member room: the receiving member on
# node b, the sender (the room's owner) on node a, so that every message
# crosses from one node to the other.  The sender sends S3_MESSAGES
# (10,000) at S3_RATE (1,000) messages a second, paced to the microsecond
# by the load generator, which stamps each send with CLOCK_MONOTONIC; the
# member's receive time minus that stamp is the latency (p50, p99, p99.9,
# max); the sender's ack latency (send -> its ack: p50, p99) beside it.  A send the load generator's window of 32 unacked sends held back
# over 1 ms past its schedule is counted (late_sends): latency is measured
# from the actual send, so many late sends mean the offered rate was not
# kept.  S3_RUNS (3) runs per system, alternating between the systems so
# that the box's noise falls on both; the table takes the median of the
# runs.  Per run, the CPU time of every process on the path (from all
# connected to the end of the run, the 1 s hold included) over the
# messages delivered: CPU microseconds per message.
#   MiniChat   two bench nginx, node a's configuration on mc_port (8093 +
#              offset) and node b's on 8096 + offset, each minus every
#              minichat_limit_* line and with access_log off, on the stack's
#              relay-workers a and b (gRPC between them), Redis, Kafka,
#              roomlist-consumer and MariaDB primary;
#   Centrifugo `NODES=2 bench/centrifugo/run.sh start`: two nodes (18001 +
#              offset, the sender's; 18002 + offset, the member's) on a Redis
#              of their own (16399 + offset) as broker and presence manager,
#              history and recovery on (config.json); stopped at the end;
#   floor      n/a: one process, no second node.
# S3_CENTRIFUGO=0 runs MiniChat alone (an A/B of MiniChat's own settings).
# --smoke: MiniChat only, 100 messages at 100/s, one run.

s3_b_port=$((8096 + off))
if [ "$smoke" = 1 ]; then
    s3_messages=${S3_MESSAGES:-100} s3_rate=${S3_RATE:-100} s3_runs=${S3_RUNS:-1}
else
    s3_messages=${S3_MESSAGES:-10000} s3_rate=${S3_RATE:-1000} s3_runs=${S3_RUNS:-3}
fi

# s3_pids SYSTEM: the processes on the system's path, as "group:pid" words.
s3_pids() {
    local p d n
    case $1 in
        minichat)
            for n in a b; do
                d=$work/nginx; [ $n = a ] || d=$work/nginx-$n
                for p in $(pgrep -P "$(pidfile "$d/nginx.pid")"); do echo "nginx-$n:$p"; done
                p=$(live "$run_dir/relay-$n/relay.pid" relay-worker); [ -n "$p" ] && echo "relay-$n:$p"
            done
            for d in "$run_dir/redis" "$run_dir"/redis-cluster/*; do
                p=$(live "$d/redis.pid" redis-server); [ -n "$p" ] && echo "redis:$p"
            done
            p=$(live "$run_dir/kafka/kafka.pid" kafka.Kafka); [ -n "$p" ] && echo "kafka:$p"
            p=$(live "$run_dir/consumer/consumer.pid" roomlist-consumer); [ -n "$p" ] && echo "consumer:$p"
            p=$(live "$run_dir/mysql-primary/mysqld.pid" mariadbd); [ -n "$p" ] && echo "mysql:$p"
            ;;
        centrifugo)
            for n in 1 2; do
                p=$(live "$run_dir/centrifugo-2/node$n/centrifugo.pid" centrifugo)
                [ -n "$p" ] && echo "centrifugo-$n:$p"
            done
            p=$(live "$run_dir/centrifugo-2/redis/redis.pid" redis-server); [ -n "$p" ] && echo "redis:$p"
            ;;
    esac
    return 0
}

# s3_run SYSTEM PROTO PATH SENDER_PORT MEMBER_PORT ROUND STEP: one loadgen
# run, one record.
s3_run() {
    local sys=$1 proto=$2 path=$3 sport=$4 mport=$5 round=$6 step=$7
    local log=$work/crossnode-$sys-$round.log ready=$work/ready pass
    local -a before after
    rm -f "$ready"
    say "[$step] cross-node $sys: $s3_messages messages at $s3_rate/s, sender on :$sport, member on :$mport"
    "$loadgen" deliver --proto "$proto" --port "$mport" --sender-port "$sport" --path "$path" \
        --secret-file "$secret" --conns 1 --room-size 1 --messages "$s3_messages" --msg-rate "$s3_rate" \
        --hold 1 --wait "$wait_s" --ready-file "$ready" --progress 5 > "$log" 2>&1 &
    measure_loadgen $! "$log" s3_pids "$sys"
    {
        printf '{"scenario":3,"system":"%s","round":%d,"rate":%s,"messages":%s,"pass":%s' \
            "$sys" "$round" "$s3_rate" "$s3_messages" "$pass"
        printf ',"sent":%s,"acked":%s,"offered":%s,"delivered":%s,"out_of_order":%s,"late_sends":%s' \
            "$(field "$log" deliver sent)" "$(field "$log" deliver acked)" "$(field "$log" deliver expected)" \
            "$(field "$log" deliver received)" "$(field "$log" deliver out_of_order)" \
            "$(field "$log" deliver late_sends)"
        printf ',"ack_p50_us":%s,"ack_p99_us":%s' "$(field "$log" ack_us p50)" "$(field "$log" ack_us p99)"
        printf ',"span_ms":%s,"p50_us":%s,"p99_us":%s,"p999_us":%s,"max_us":%s,"cpu_ms":{' \
            "$(field "$log" rate span_ms)" "$(field "$log" latency_us p50)" "$(field "$log" latency_us p99)" \
            "$(field "$log" latency_us p99.9)" "$(field "$log" latency_us max)"
        cpu_json
        printf '},"log":"%s"}\n' "$log"
    } >> "$records"
    say "[$step] $(python3 "$top/bench/report.py" --line "$(tail -1 "$records")")"
}

scenario_3() {
    local systems=minichat n=0 total round sys cf_ports
    start_minichat a "$mc_port"
    start_minichat b "$s3_b_port"
    printf '{"scenario":3,"system":"floor","skipped":"n/a: the floor is one process; it has no second node"}\n' \
        >> "$records"
    if [ "$smoke" = 0 ] && [ "${S3_CENTRIFUGO:-1}" = 0 ]; then
        say "S3_CENTRIFUGO=0: Centrifugo skipped"
        printf '{"scenario":3,"system":"centrifugo","skipped":"S3_CENTRIFUGO=0"}\n' >> "$records"
    elif [ "$smoke" = 0 ]; then
        if [ -f "$top/bench/centrifugo/run.sh" ] && ls "$top"/.cache/centrifugo/*/centrifugo > /dev/null 2>&1; then
            if NODES=2 bash "$top/bench/centrifugo/run.sh" start > "$work/centrifugo-2.log" 2>&1; then
                cf2_started=1
                systems="$systems centrifugo"
                cf_ports=$(NODES=2 bash "$top/bench/centrifugo/run.sh" port)
            else
                say "Centrifugo's two nodes did not start ($work/centrifugo-2.log): skipped"
                printf '{"scenario":3,"system":"centrifugo","skipped":"did not start"}\n' >> "$records"
            fi
        else
            say "Centrifugo: no bench/centrifugo/run.sh or no binary under .cache/centrifugo/: skipped"
            printf '{"scenario":3,"system":"centrifugo","skipped":"not built (bench/centrifugo/build.sh)"}\n' \
                >> "$records"
        fi
    fi
    total=$(( $(wc -w <<< "$systems") * s3_runs ))
    for round in $(seq "$s3_runs"); do
        for sys in $systems; do
            n=$((n + 1))
            case $sys in
                minichat) s3_run minichat minichat /ws "$mc_port" "$s3_b_port" "$round" "$n/$total" ;;
                centrifugo) s3_run centrifugo centrifugo /connection/websocket "${cf_ports% *}" "${cf_ports#* }" \
                    "$round" "$n/$total" ;;
            esac
        done
    done
    if [ "${cf2_started:-0}" = 1 ]; then
        NODES=2 bash "$top/bench/centrifugo/run.sh" stop > /dev/null 2>&1 || true
        cf2_started=0
    fi
}
