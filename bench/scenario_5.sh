# Scenario 5 of make bench: persistence and history at depth.  Sourced by
# bench/bench.sh, whose helpers (say, die, cpu_ms, live, start_minichat,
# the records file) it uses; bench/README.md says what each figure is.
#
# (a) Persistence.  S5_MSGS (200,000) messages for S5_ROOMS (100) fresh
#     rooms, S5_BODY (100) bytes each, go straight into Kafka
#     (build/bin/kafka_fill, as bench/consumer_rate.sh does; S5_COMPRESSION,
#     none by default, is its compression.type) and the roomlist-consumer
#     writes them into the stack's MariaDB primary: rows a second from the
#     first produce to the last row in MySQL.  The reference: the same rows
#     written by build/bin/raw_insert as 1,000-row `INSERT IGNORE`
#     statements into the same `messages` table, on fresh rooms of its own,
#     binlog on as always (it replicates to the replica like the consumer's
#     rows).  CPU of the consumer, the primary, Kafka and the replica per
#     row (/proc/PID/stat) in each phase.  Each phase starts from the same
#     state (s5_quiet: replica caught up, purge done, dirty pages written
#     out and the redo checkpoint caught up), recorded with it; odd rounds
#     run the consumer first, even rounds the raw insert.  An unrecorded
#     warm-up round of S5_WARMUP (20,000) messages comes first.  The rooms
#     and their rows are deleted after each round.  S5_REPEAT (4) rounds;
#     the report quotes the medians (the box is shared).
#     Then, once the stack's consumer group has committed them, the messages
#     topic's records are deleted (Kafka's DeleteRecordsCommand up to the
#     end), so that a new consumer group reading from the start does not
#     meet millions of them.  S5_HISTORY=0 stops here.
# (b) History at depth.  One room holding S5_DEPTH (10,000,000) messages,
#     made once and kept in the stack's MariaDB (both servers) for later
#     runs: the rooms and room_members rows are ordinary replicated writes;
#     the messages are written on the primary and on the replica each by
#     itself with sql_log_bin=0 (INSERT ... SELECT from the SEQUENCE engine's
#     seq_A_to_B, 500,000 rows a transaction), so nothing of them enters a
#     binlog: no GTID is spent, the replica's GTID position stays the
#     primary's (gtid_strict_mode holds), and no 1.5 GB of row events cross
#     to the replica.  A run that stops midway resumes from the highest seq
#     each server holds.  Before the pages: (1) the servers write out what a
#     load left dirty in their buffer pools (innodb_max_dirty_pages_pct 0 and
#     io_capacity 20,000 until under 1,000 dirty pages, then back; at most 300
#     s): a reader of a replica that is writing out 1.5 GB of fresh pages, or
#     that must flush a dirty page to make room for each page it reads,
#     measures the load, not the page (a 342 ms stall in the middle depth of
#     the 09:40 run).  (2) With S5_WARM=1 (the default) the room's rows are
#     read once on the replica (one scan of its primary key, timed), when its
#     pool holds the table: a replica sized as docs/operations.md says holds
#     the pages it has read or reloaded (innodb_buffer_pool_dump_pct=100 at a
#     restart), and this stands in for one that has run a while with readers
#     at every depth; S5_WARM=0 leaves the pool as it is.  Either way the run
#     prints the replica's pool size against the room's size and counts, per
#     depth, the 16 KB pages InnoDB read from disk (history_load
#     --replica-port): "disk reads 0" is a page from memory.  Then
#     build/bin/history_load asks S5_PAGES (1,000) pages of 50 through the
#     bench nginx (REST history: nginx -> Redis's history script ->
#     relay-worker -> the replica), paging back from the newest, the middle
#     and the oldest 50,000 messages.  The room's Redis recent log is empty
#     (the room is rebuilt from MySQL, nobody sends to it), so every page is a
#     MySQL page; the run checks it: the log's size is recorded, and the
#     replica's Com_stmt_execute must grow by at least the number of pages
#     (the primary's is recorded too: the router reads the primary when the
#     replica lags).  The CPU of the bench nginx's workers, Redis,
#     relay-worker a and the replica over the run is recorded too (per page in
#     the report).
s5_msgs=${S5_MSGS:-200000}
s5_rooms=${S5_ROOMS:-100}
s5_body=${S5_BODY:-100}
s5_depth=${S5_DEPTH:-10000000}
s5_pages=${S5_PAGES:-1000}
s5_repeat=${S5_REPEAT:-4}
s5_warm=${S5_WARM:-1}
s5_do_history=${S5_HISTORY:-1}
s5_warmup=${S5_WARMUP:-20000}
s5_compression=${S5_COMPRESSION:-none}
for _v in "S5_MSGS=$s5_msgs" "S5_ROOMS=$s5_rooms" "S5_BODY=$s5_body" "S5_DEPTH=$s5_depth" "S5_PAGES=$s5_pages" \
    "S5_REPEAT=$s5_repeat"; do
    [[ ${_v#*=} =~ ^[1-9][0-9]{0,8}$ ]] || die "${_v%%=*} must be a whole number from 1 to 999999999, not \"${_v#*=}\""
done
[[ $s5_warm =~ ^[01]$ ]] || die "S5_WARM must be 0 or 1, not \"$s5_warm\""
[[ $s5_warmup =~ ^(0|[1-9][0-9]{0,8})$ ]] || die "S5_WARMUP must be a whole number from 0 to 999999999, not \"$s5_warmup\""
[[ $s5_compression =~ ^(none|gzip|snappy|lz4|zstd)$ ]] || die "S5_COMPRESSION must be none, gzip, snappy, lz4 or zstd, not \"$s5_compression\""
[[ $s5_do_history =~ ^[01]$ ]] || die "S5_HISTORY must be 0 or 1, not \"$s5_do_history\""
[ "$s5_rooms" -le 1000000 ] && [ "$s5_body" -le 65536 ] && [ "$s5_depth" -ge 2 ] \
    || die "S5_ROOMS is at most 1000000, S5_BODY at most 65536, S5_DEPTH at least 2"
s5_limit=50
s5_user=990000005
s5_title=bench-s5-depth-$s5_depth   # one room per depth: Redis caches its last seq
s5_chunk=500000
s5_primary=$((13306 + off))
s5_replica=$((13307 + off))
s5_kafka=127.0.0.1:$((19092 + off))

# s5_sql PORT SQL: one statement batch as root, rows tab-separated.
s5_sql() { mariadb --no-defaults --protocol=TCP -h127.0.0.1 -P"$1" -uroot minichat -N -e "$2"; }
s5_now_ms() { echo $(($(date +%s%N) / 1000000)); }

# s5_replica_wait: until the replica applied everything the primary logged.
s5_replica_wait() {
    local pos
    pos=$(s5_sql "$s5_primary" 'SELECT @@gtid_binlog_pos')
    [ "$(s5_sql "$s5_replica" "SELECT MASTER_GTID_WAIT('$pos', 300)")" = 0 ] || die "the replica did not catch up"
}

# s5_pids: the consumer's, the primary's, Kafka's and the replica's pids as
# group:pid.
s5_pids() {
    local p
    p=$(live "$run_dir/consumer/consumer.pid" roomlist-consumer); [ -n "$p" ] && echo "consumer:$p"
    p=$(live "$run_dir/mysql-primary/mysqld.pid" mariadbd); [ -n "$p" ] && echo "mysql:$p"
    p=$(live "$run_dir/kafka/kafka.pid" kafka.Kafka); [ -n "$p" ] && echo "kafka:$p"
    p=$(live "$run_dir/mysql-replica/mysqld.pid" mariadbd); [ -n "$p" ] && echo "replica:$p"
    return 0
}

# s5_cpu_json BEFORE AFTER: {"group":ms,...} from two cpu_groups outputs.
s5_cpu_json() {
    local -a b a
    local i first=1
    mapfile -t b <<< "$1"
    mapfile -t a <<< "$2"
    printf '{'
    for i in "${!a[@]}"; do
        [ -n "${a[$i]}" ] || continue
        [ $first = 1 ] || printf ','
        printf '"%s":%d' "${a[$i]%%=*}" $((${a[$i]#*=} - ${b[$i]#*=}))
        first=0
    done
    printf '}'
}

# s5_persistence: phase (a): an unrecorded warm-up round of S5_WARMUP
# messages, then S5_REPEAT rounds of two records each (the box is shared:
# the report takes the medians).
s5_persistence() {
    local i
    make -s -C "$top" "$top/build/bin/kafka_fill" "$top/build/bin/raw_insert" > /dev/null
    if [ "$s5_warmup" -gt 0 ]; then
        say "[5] warm-up: $s5_warmup messages through each writer, not recorded (S5_WARMUP)"
        s5_round 0 "$s5_warmup"
    fi
    for ((i = 1; i <= s5_repeat; i++)); do
        s5_round "$i" "$s5_msgs"
    done
    s5_kafka_trim
}

# s5_kafka JAVA_CLASS ARGS...: one of Kafka's command-line tools, as
# scripts/stack.sh runs them.
s5_kafka() {
    timeout 120 java -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
        -Dlog4j2.configurationFile="$run_dir/kafka/tools-log4j2.properties" -cp "$top/.cache/kafka/libs/*" "$@"
}

# s5_kafka_trim: once the stack's consumer group has committed everything,
# deletes the messages topic's records up to its end.  The rounds leave
# S5_REPEAT x S5_MSGS records there, and a consumer of a new group (a test's
# own roomlist-consumer, tests/integration/test_push.py) reads the topic
# from its start: millions of records it would take minutes to go through.
s5_kafka_trim() {
    local t0 n json p lag
    t0=$(s5_now_ms)
    while :; do
        lag=$(s5_kafka org.apache.kafka.tools.consumer.group.ConsumerGroupCommand --bootstrap-server "$s5_kafka" \
            --describe --group minichat-roomlist 2> /dev/null | awk '$2 == "minichat.messages" { s += $6 } END { print s + 0 }')
        [ "$lag" = 0 ] && break
        [ $(($(s5_now_ms) - t0)) -lt 60000 ] || { say "[5] the consumer group still lags ($lag): the topic is left as it is"; return 0; }
        sleep 1
    done
    n=$(s5_kafka org.apache.kafka.tools.TopicCommand --bootstrap-server "$s5_kafka" --describe \
        --topic minichat.messages 2> /dev/null | sed -n 's/.*PartitionCount: *\([0-9]*\).*/\1/p')
    [ -n "$n" ] || { say "[5] cannot read the topic's partitions: the topic is left as it is"; return 0; }
    json='{"version":1,"partitions":['
    for ((p = 0; p < n; p++)); do
        json+=$([ $p = 0 ] || echo ,)'{"topic":"minichat.messages","partition":'$p',"offset":-1}'
    done
    echo "$json]}" > "$work/s5-delete-records.json"
    if s5_kafka org.apache.kafka.tools.DeleteRecordsCommand --bootstrap-server "$s5_kafka" \
        --offset-json-file "$work/s5-delete-records.json" > "$work/s5-delete-records.log" 2>&1; then
        say "[5] deleted the messages topic's consumed records ($n partitions)"
    else
        say "[5] could not delete the topic's records ($work/s5-delete-records.log)"
    fi
}

# s5_quiet: until the primary is as quiet as before any round: the replica
# has applied everything (the last round's rows and deletes), InnoDB's
# purge has removed the deleted rows (history list under 1,000 undo logs,
# at most 120 s), and the primary has written out its dirty pages
# (s5_flush), which also empties its redo log's checkpoint age: a phase
# that starts with the log most of the way to its checkpoint limit (96 MB
# of redo by default; a phase of 200,000 rows writes about half of that)
# stalls in InnoDB's synchronous flushing, one that starts empty does not.
# Last, `sync` writes out the files the last phase left dirty in the page
# cache (s5_sync says why).  So neither writer shares the server with the
# last phase's leftovers.
s5_quiet() {
    local t0
    s5_replica_wait
    t0=$(s5_now_ms)
    while [ "$(s5_status "$s5_primary" Innodb_history_list_length)" -ge 1000 ] \
        && [ $(($(s5_now_ms) - t0)) -lt 120000 ]; do
        sleep 0.2
    done
    s5_flush "$s5_primary" > /dev/null
    sync # the last phase's files (Kafka segments, binlogs) written back now, not during this one
}

# s5_state: the primary's state as a phase starts, JSON fields: the
# messages table's size (MB, InnoDB's estimate), the undo logs purge has
# yet to remove, the dirty pages of the pool and the redo log's checkpoint
# age (MB).
s5_state() {
    printf '"table_mb":%s,"history_list":%s,"dirty_pages":%s,"checkpoint_age_mb":%s' \
        "$(s5_sql "$s5_primary" "SELECT ROUND(data_length / 1048576) FROM information_schema.tables
            WHERE table_schema = 'minichat' AND table_name = 'messages'")" \
        "$(s5_status "$s5_primary" Innodb_history_list_length)" \
        "$(s5_status "$s5_primary" Innodb_buffer_pool_pages_dirty)" \
        "$(( $(s5_status "$s5_primary" Innodb_checkpoint_age) / 1048576 ))"
}

# s5_cpu_with_client JSON LOG: the CPU groups' JSON with "client" added:
# the CPU the writer's feeding process reported about itself in LOG
# (`<tool>: ... cpu_ms=N`; kafka_fill, standing in for the relay-workers, or
# raw_insert), when it did.
s5_cpu_with_client() {
    local ms
    ms=$(sed -n 's/^[a-z_]*: .*cpu_ms=\([0-9]*\).*/\1/p' "$2" | tail -1)
    if [ -n "$ms" ] && [ "$1" != '{}' ]; then echo "${1%\}},\"client\":$ms}"; else echo "$1"; fi
}

# s5_record ROUND SYSTEM ROOMBASE MSGS STATE EXTRA: one persistence record
# (round 0, the warm-up, is printed, not recorded).
s5_record() {
    local round=$1 sys=$2 rbase=$3 msgs=$4 state=$5 extra=$6 n line
    n=$(s5_sql "$s5_primary" "SELECT COUNT(*) FROM messages WHERE room_id BETWEEN $rbase AND $((rbase + s5_rooms - 1))")
    line=$(printf '{"scenario":5,"part":"persist","system":"%s","round":%d,"rows":%s,"rooms":%s,"body_bytes":%s,"stored":%s,%s,%s}' \
        "$sys" "$round" "$msgs" "$s5_rooms" "$s5_body" "$n" "$state" "$extra")
    [ "$round" = 0 ] || echo "$line" >> "$records"
    say "[5] $([ "$round" = 0 ] && echo "(warm-up) ")$(python3 "$top/bench/report.py" --line "$line")"
}

# s5_consumer ROUND ROOMBASE MSGS: MSGS messages for the rooms from
# ROOMBASE through Kafka and the stack's consumer into `messages`.
s5_consumer() {
    local round=$1 rbase=$2 msgs=$3 last=$(($2 + s5_rooms - 1)) t0 t1 t2 n c0 c1 state cpu
    local -a pids
    mapfile -t pids < <(s5_pids)
    s5_quiet
    state=$(s5_state)
    say "[5] persistence $round/$s5_repeat: $msgs messages of $s5_body bytes for $s5_rooms rooms through Kafka and the consumer"
    c0=$(cpu_groups "${pids[@]}")
    t0=$(s5_now_ms)
    "$top/build/bin/kafka_fill" "$s5_kafka" minichat.messages "$rbase" "$s5_rooms" "$msgs" "$s5_body" 0 \
        "$s5_compression" > "$work/s5-fill.log" 2>&1 || die "kafka_fill failed ($work/s5-fill.log)"
    t1=$(s5_now_ms)
    # the highest seq of each room, summed (seqs are dense per room and
    # every room's rows arrive in order): one index entry per room.  Not
    # MAX(seq): as a dependent subquery over a range of rooms MariaDB reads
    # every row of each room for it (ANALYZE: r_rows = the room's rows), so
    # each poll scanned all the rows stored so far, on the primary, during
    # the consumer's phase only.  Polled every 10 ms inside one session (a
    # compound statement), not by a new client process every 100 ms: the
    # raw insert's end is known to the millisecond, and a client started
    # ten times a second spent CPU beside the consumer that the raw phase
    # does not pay
    n=$(printf '%s\n' 'DELIMITER //' "BEGIN NOT ATOMIC
            DECLARE n BIGINT DEFAULT 0;
            DECLARE i INT DEFAULT 0;
            WHILE n < $msgs AND i < 60000 DO
                SELECT COALESCE(SUM((SELECT seq FROM messages WHERE room_id = r.id ORDER BY seq DESC LIMIT 1)), 0)
                    INTO n FROM rooms r WHERE r.id BETWEEN $rbase AND $last;
                SET i = i + 1;
                IF n < $msgs THEN DO SLEEP(0.01); END IF;
            END WHILE;
            SELECT n;
        END//" | timeout 700 mariadb --no-defaults --protocol=TCP -h127.0.0.1 -P"$s5_primary" -uroot minichat -N) \
        || die "polling the primary for the consumer's rows failed"
    [ "$n" -ge "$msgs" ] || die "the consumer stored $n of $msgs rows in 600 s"
    t2=$(s5_now_ms)
    c1=$(cpu_groups "${pids[@]}")
    cpu=$(s5_cpu_with_client "$(s5_cpu_json "$c0" "$c1")" "$work/s5-fill.log")
    s5_record "$round" consumer "$rbase" "$msgs" "$state" "$(printf '"produce_ms":%d,"ms":%d,"cpu_ms":%s,"compression":"%s"' \
        $((t1 - t0)) $((t2 - t0)) "$cpu" "$s5_compression")"
}

# s5_raw ROUND ROOMBASE MSGS: the same rows for the rooms from ROOMBASE as
# 1,000-row INSERT IGNORE statements (build/bin/raw_insert) into `messages`.
s5_raw() {
    local round=$1 rbase=$2 msgs=$3 t0 t2 c0 c1 state log=$work/s5-raw.log
    local -a pids
    mapfile -t pids < <(s5_pids)
    s5_quiet
    state=$(s5_state)
    say "[5] persistence $round/$s5_repeat: the same rows as 1,000-row INSERT IGNORE statements (build/bin/raw_insert)"
    c0=$(cpu_groups "${pids[@]}")
    t0=$(s5_now_ms)
    "$top/build/bin/raw_insert" 127.0.0.1 "$s5_primary" messages "$rbase" "$s5_rooms" "$msgs" \
        "$s5_body" 1000 > "$log" 2>&1 || die "raw_insert failed ($log)"
    t2=$(s5_now_ms)
    c1=$(cpu_groups "${pids[@]}")
    s5_record "$round" raw "$rbase" "$msgs" "$state" "$(printf '"ms":%d,"cpu_ms":%s' $((t2 - t0)) \
        "$(s5_cpu_with_client "$(s5_cpu_json "$c0" "$c1")" "$log")")"
}

# s5_round N MSGS: both writers, each on fresh rooms of its own in the same
# `messages` table (the same B-tree, pool and binlog); odd rounds the
# consumer first, even rounds the raw insert first, each after s5_quiet.
s5_round() {
    local round=$1 msgs=$2 base last
    base=$(s5_sql "$s5_primary" "SELECT COALESCE(MAX(id), 0) + 1000 FROM rooms")
    last=$((base + 2 * s5_rooms - 1))
    # rooms rows for the raw insert's rooms too: the next round's ids come
    # after them, and a run that dies midway leaves no orphan rows in use
    s5_sql "$s5_primary" "INSERT INTO rooms (id, kind, title, created_by) SELECT seq, 'group', 'bench-s5', 1
        FROM seq_${base}_to_${last}"
    if [ $((round % 2)) = 1 ] || [ "$round" = 0 ]; then
        s5_consumer "$round" "$base" "$msgs"
        s5_raw "$round" $((base + s5_rooms)) "$msgs"
    else
        s5_raw "$round" $((base + s5_rooms)) "$msgs"
        s5_consumer "$round" "$base" "$msgs"
    fi
    s5_replica_wait
    s5_sql "$s5_primary" "DELETE FROM messages WHERE room_id BETWEEN $base AND $last;
        DELETE FROM rooms WHERE id BETWEEN $base AND $last"
}

# s5_load SERVER_PORT ROOM: the room's messages up to S5_DEPTH on one
# server, without the binlog, from the highest seq it holds.
s5_load() {
    local port=$1 room=$2 have a b
    have=$(s5_sql "$port" "SELECT COALESCE(MAX(seq), 0) FROM messages WHERE room_id = $room")
    for ((a = have + 1; a <= s5_depth; a += s5_chunk)); do
        b=$((a + s5_chunk - 1 < s5_depth ? a + s5_chunk - 1 : s5_depth))
        s5_sql "$port" "SET sql_log_bin = 0; INSERT IGNORE INTO messages
            (room_id, seq, sender_id, kind, body, client_msg_id, created_at)
            SELECT $room, seq, $s5_user, 'text', CONCAT('message ', seq, ' ', REPEAT('x', 84)),
                   CONCAT('s5-', seq), NOW(3) FROM seq_${a}_to_${b}" || return 1
    done
}

# s5_room: prints the id of the deep room, made and filled when missing.
s5_room() {
    local room hp hr t0
    room=$(s5_sql "$s5_primary" "SELECT id FROM rooms WHERE title = '$s5_title' AND created_by = $s5_user
        ORDER BY id LIMIT 1")
    if [ -z "$room" ]; then
        room=$(s5_sql "$s5_primary" "INSERT INTO rooms (kind, title, created_by, last_seq, last_message_at)
            VALUES ('group', '$s5_title', $s5_user, $s5_depth, NOW(3));
            INSERT INTO room_members (room_id, user_id, last_read_seq, joined_seq)
            VALUES (LAST_INSERT_ID(), $s5_user, $s5_depth, 0);
            SELECT LAST_INSERT_ID()")
        s5_replica_wait
    fi
    hp=$(s5_sql "$s5_primary" "SELECT COALESCE(MAX(seq), 0) FROM messages WHERE room_id = $room")
    hr=$(s5_sql "$s5_replica" "SELECT COALESCE(MAX(seq), 0) FROM messages WHERE room_id = $room")
    if [ "$hp" != "$s5_depth" ] || [ "$hr" != "$s5_depth" ]; then
        say "[5] loading room $room to $s5_depth messages (primary has $hp, replica $hr; kept for later runs)" >&2
        t0=$(s5_now_ms)
        s5_load "$s5_primary" "$room" > "$work/s5-load-primary.log" 2>&1 &
        local lp=$!
        s5_load "$s5_replica" "$room" > "$work/s5-load-replica.log" 2>&1 || die "loading the replica failed"
        wait "$lp" || die "loading the primary failed ($work/s5-load-primary.log)"
        say "[5] loaded in $(( ($(s5_now_ms) - t0) / 1000 )) s" >&2
    else
        say "[5] room $room holds $s5_depth messages on both servers (cached)" >&2
    fi
    echo "$room"
}

# s5_status PORT NAME: one of a server's global status counters.
s5_status() { s5_sql "$1" "SHOW GLOBAL STATUS LIKE '$2'" | cut -f2; }

# s5_busy PORT: true while a server has 1,000 dirty pages or more, or a
# redo checkpoint age of 1 MB or more.
s5_busy() {
    [ "$(s5_status "$1" Innodb_buffer_pool_pages_dirty)" -ge 1000 ] \
        || [ "$(s5_status "$1" Innodb_checkpoint_age)" -ge 1048576 ]
}

# s5_flush PORT: a server writes out the dirty pages of its buffer pool
# until under 1,000 are left and its redo checkpoint has caught up to
# within 1 MB (innodb_max_dirty_pages_pct 0 and io_capacity 20,000, then
# back; at most 300 s).  Prints how many pages were dirty and how long it
# took, or nothing when there was nothing to do.
s5_flush() {
    local port=$1 pct cap capmax dirty t0
    dirty=$(s5_status "$port" Innodb_buffer_pool_pages_dirty)
    s5_busy "$port" || return 0
    t0=$(s5_now_ms)
    read -r pct cap capmax < <(s5_sql "$port" 'SELECT @@GLOBAL.innodb_max_dirty_pages_pct, @@GLOBAL.innodb_io_capacity,
        @@GLOBAL.innodb_io_capacity_max')
    # at the default io_capacity (200 pages a second) a 10M-row load's
    # pages would take minutes
    s5_sql "$port" 'SET GLOBAL innodb_io_capacity_max = 20000; SET GLOBAL innodb_io_capacity = 20000;
        SET GLOBAL innodb_max_dirty_pages_pct = 0'
    while s5_busy "$port" && [ $(($(s5_now_ms) - t0)) -lt 300000 ]; do
        sleep 0.2
    done
    s5_sql "$port" "SET GLOBAL innodb_max_dirty_pages_pct = $pct; SET GLOBAL innodb_io_capacity = $cap;
        SET GLOBAL innodb_io_capacity_max = $capmax"
    echo "$dirty dirty pages in $(( ($(s5_now_ms) - t0) / 1000 )) s ($(s5_status "$port" Innodb_buffer_pool_pages_dirty) left)"
}

# s5_settle: both servers write out the dirty pages of their buffer pools
# (a fresh load leaves up to the whole pool dirty) before pages are timed.
s5_settle() {
    local port done
    for port in "$s5_primary" "$s5_replica"; do
        done=$(s5_flush "$port")
        [ -z "$done" ] || say "[5] MariaDB on $port wrote out $done"
    done
}

# s5_sync: the kernel writes out the files the earlier phases wrote (the
# persistence rounds leave hundreds of MB of Kafka segments, binlogs and
# redo in the page cache, which it would otherwise write back 30 s later,
# in the middle of the pages: ext4's and the block layer's kernel threads
# then take the cores the path needs; a full make bench measured a 2.7 ms
# p99 at the first depth that way, 0.75 ms at the next).
s5_sync() {
    local dirty t0
    dirty=$(awk '/^Dirty:/ {print int($2 / 1024)}' /proc/meminfo)
    t0=$(s5_now_ms)
    sync
    say "[5] wrote out the page cache's dirty files before the pages: $dirty MB in $(( $(s5_now_ms) - t0 )) ms"
}

# s5_warm ROOM: the replica's pool against the room's size; with S5_WARM=1
# the room's rows read once there (s5_warmed 1 when they were).
s5_warmed=0
s5_warm() {
    local room=$1 pool mb t0 r0
    pool=$(( $(s5_sql "$s5_replica" 'SELECT @@innodb_buffer_pool_size') / 1048576 ))
    mb=$(s5_sql "$s5_replica" "SELECT ROUND(data_length / 1048576) FROM information_schema.tables
        WHERE table_schema = 'minichat' AND table_name = 'messages'")
    say "[5] the replica's buffer pool is $pool MB, its messages table $mb MB" \
        "$([ "$pool" -gt "$mb" ] && echo "(it fits)" || echo "(it does not fit: pages read since the load or a restart come from disk)")"
    [ "$s5_warm" = 1 ] || { say "[5] S5_WARM=0: the replica's pool is left as it is"; return 0; }
    [ "$pool" -gt "$mb" ] || { say "[5] not warmed: the table does not fit the pool"; return 0; }
    t0=$(s5_now_ms)
    r0=$(s5_status "$s5_replica" Innodb_buffer_pool_reads)
    s5_sql "$s5_replica" "SELECT COUNT(*) FROM messages FORCE INDEX (PRIMARY) WHERE room_id = $room
        AND LENGTH(body) >= 0" > /dev/null
    s5_warmed=1
    say "[5] warmed the replica's pool (S5_WARM=1; as a replica that holds the table and has been read at every" \
        "depth would be): the room's rows read once, $(( $(s5_status "$s5_replica" Innodb_buffer_pool_reads) - r0 ))" \
        "pages from disk in $(( $(s5_now_ms) - t0 )) ms"
}

# s5_stmts PORT: a server's prepared-statement executions so far.
s5_stmts() { s5_sql "$1" "SHOW GLOBAL STATUS LIKE 'Com_stmt_execute'" | cut -f2; }

# s5_redis_log ROOM: the number of entries in the room's recent log.
s5_redis_log() {
    local port=$((16379 + off))
    # the cluster's directory stays after a cluster stack stopped: ask the
    # single Redis when it runs
    [ -z "$(live "$run_dir/redis/redis.pid" redis-server)" ] && [ -d "$run_dir/redis-cluster" ] && port=$((17000 + off))
    redis-cli -c -h 127.0.0.1 -p "$port" ZCARD "{r:$1}:log" 2>/dev/null || echo null
}

# s5_history_pids: the processes a history page goes through, group:pid.
s5_history_pids() {
    local p d
    for p in $(pgrep -P "$(pidfile "$work/nginx/nginx.pid")"); do echo "nginx:$p"; done
    for d in "$run_dir/redis" "$run_dir"/redis-cluster/*; do
        p=$(live "$d/redis.pid" redis-server); [ -n "$p" ] && echo "redis:$p"
    done
    p=$(live "$run_dir/relay-a/relay.pid" relay-worker); [ -n "$p" ] && echo "relay:$p"
    p=$(live "$run_dir/mysql-replica/mysqld.pid" mariadbd); [ -n "$p" ] && echo "replica:$p"
    return 0
}

# s5_history: phase (b), one record per depth and one for all of them.
s5_history() {
    local room s0 s1 p0 p1 c0 c1 box log=$work/s5-history.log oldest=$((s5_pages * s5_limit + 1)) befores d
    local -a pids
    make -s -C "$top" "$top/build/bin/history_load" > /dev/null
    room=$(s5_room)
    s5_replica_wait # the persistence rounds' deletes, or the replica lags and the router reads the primary
    s5_settle
    s5_warm "$room"
    s5_sync
    [ "$oldest" -le "$s5_depth" ] || oldest=$((s5_depth + 1))
    befores="$((s5_depth + 1)),$((s5_depth / 2)),$oldest"
    say "[5] history: $s5_pages pages of $s5_limit from each of before = $befores (room $room, $s5_depth messages)"
    (exec 3<>"/dev/tcp/127.0.0.1/$mc_port") 2>/dev/null || start_minichat
    mapfile -t pids < <(s5_history_pids)
    c0=$(cpu_groups "${pids[@]}")
    s0=$(s5_stmts "$s5_replica")
    p0=$(s5_stmts "$s5_primary")
    python3 "$top/bench/box_cpu.py" snap "$work/s5-box.json"
    "$top/build/bin/history_load" --port "$mc_port" --secret-file "$secret" --user "$s5_user" --room "$room" \
        --befores "$befores" --pages "$s5_pages" --limit "$s5_limit" --replica-port "$s5_replica" > "$log" 2>&1 \
        || die "history_load failed ($log)"
    box=$(python3 "$top/bench/box_cpu.py" diff "$work/s5-box.json" "${pids[@]#*:}")
    s1=$(s5_stmts "$s5_replica")
    p1=$(s5_stmts "$s5_primary")
    c1=$(cpu_groups "${pids[@]}")
    grep '^history_load: before=' "$log" | sed 's/^/bench:     /' || true
    while read -r _ depth pages errors p50 p99 p999 max reads; do
        d=${depth#depth=}
        printf '{"scenario":5,"part":"history","depth":"%s","rows":%s,"room":%s,"pages":%s,"errors":%s' \
            "$d" "$s5_depth" "$room" "${pages#pages=}" "${errors#errors=}" >> "$records"
        printf ',"p50_us":%s,"p99_us":%s,"p999_us":%s,"max_us":%s,"replica_stmts":%d,"primary_stmts":%d' \
            "${p50#p50_us=}" "${p99#p99_us=}" "${p999#p999_us=}" "${max#max_us=}" $((s1 - s0)) $((p1 - p0)) \
            >> "$records"
        printf ',"redis_log":%s,"disk_reads":%s,"warmed":%s' "$(s5_redis_log "$room")" "${reads#disk_reads=}" \
            "$([ "$s5_warmed" = 1 ] && echo true || echo false)" >> "$records"
        # the CPU of the whole run, on the "all" line only
        [ "$d" = all ] && printf ',"cpu_ms":%s,"box":%s' "$(s5_cpu_json "$c0" "$c1")" "${box:-null}" >> "$records"
        printf '}\n' >> "$records"
        say "[5] $(python3 "$top/bench/report.py" --line "$(tail -1 "$records")")"
    done < <(grep '^history_load: depth=' "$log")
}

scenario_5() {
    if [ "$smoke" = 1 ]; then
        return 0
    fi
    # the stack (start_minichat starts it when node a does not answer)
    (exec 3<>"/dev/tcp/127.0.0.1/$mc_port") 2>/dev/null || start_minichat
    s5_persistence
    if [ "$s5_do_history" = 0 ]; then
        say "[5] S5_HISTORY=0: history at depth skipped (no deep room loaded)"
        return 0
    fi
    s5_history
}
