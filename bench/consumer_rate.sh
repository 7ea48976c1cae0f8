#!/usr/bin/env bash
# Persistence throughput of the roomlist-consumer (a measurement, not a
# test): MSGS messages for ROOMS fresh rooms go straight into Kafka
# (bench/kafka_fill.c), and the time until MySQL holds them all is printed
# as rows/s, with the CPU the consumer and the MySQL primary spent per row
# over that time (/proc/PID/stat).  RATE (messages a second, 0 for as fast
# as possible) paces the producer: at a light load the figure to read is
# the CPU per row, since the time is the producer's.  Run against a started
# dev stack with the stack's env, e.g.
#   MINICHAT_PORT_OFFSET=N MINICHAT_RUN=/tmp/mc-x bash bench/consumer_rate.sh [MSGS] [ROOMS] [BODY_BYTES] [RATE]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
MSGS=${1:-100000}
ROOMS=${2:-100}
BODY=${3:-100}
RATE=${4:-0}
RUN=${MINICHAT_RUN:-$top/.run}
OFF=${MINICHAT_PORT_OFFSET:-0}
PRIMARY_PORT=$((13306 + OFF))
KAFKA=127.0.0.1:$((19092 + OFF))
sql() { mariadb --no-defaults --protocol=TCP -h127.0.0.1 -P"$PRIMARY_PORT" -uroot minichat -N -e "$1"; }

make -s -C "$top" "$top/build/bin/kafka_fill" > /dev/null
base=$(sql "SELECT COALESCE(MAX(id), 0) + 1000 FROM rooms")
vals=$(seq "$base" $((base + ROOMS - 1)) | sed "s/.*/(&,'group','bench',1)/" | paste -sd,)
sql "INSERT INTO rooms (id, kind, title, created_by) VALUES $vals"

# cpu PIDFILE: user + system ticks of the process so far (the comm field may hold spaces)
cpu() { sed 's/.*) //' "/proc/$(cat "$1")/stat" | awk '{print $12 + $13}'; }
hz=$(getconf CLK_TCK)
cons_pid=$RUN/consumer/consumer.pid
db_pid=$RUN/mysql-primary/mysqld.pid
c0=$(cpu "$cons_pid"); d0=$(cpu "$db_pid")
t0=$(date +%s%N)
"$top/build/bin/kafka_fill" "$KAFKA" minichat.messages "$base" "$ROOMS" "$MSGS" "$BODY" "$RATE"
t1=$(date +%s%N)
while :; do
    # the highest seq of each room, summed (kafka_fill's seqs are dense per
    # room): one index entry per room, where COUNT(*) read every row stored
    # so far on the primary being measured, twenty times a second
    n=$(sql "SELECT COALESCE(SUM((SELECT seq FROM messages WHERE room_id = r.id ORDER BY seq DESC LIMIT 1)), 0)
        FROM rooms r WHERE r.id BETWEEN $base AND $((base + ROOMS - 1))")
    [ "$n" -ge "$MSGS" ] && break
    sleep 0.05
done
t2=$(date +%s%N)
c1=$(cpu "$cons_pid"); d1=$(cpu "$db_pid")
echo "produced $MSGS messages into Kafka in $(( (t1 - t0) / 1000000 )) ms;" \
     "all in MySQL after $(( (t2 - t0) / 1000000 )) ms: $(( MSGS * 1000000000 / (t2 - t0) )) rows/s;" \
     "CPU us per row: consumer $(( (c1 - c0) * 1000000 / hz / MSGS )), mysql primary $(( (d1 - d0) * 1000000 / hz / MSGS ))"
