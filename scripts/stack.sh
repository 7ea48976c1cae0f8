#!/usr/bin/env bash
# MiniChat local stack: every server MiniChat needs, on 127.0.0.1 only, each
# with its own directory under .run/ (git-ignored) in the repository.
#
#   stack.sh start    start what is not running yet (idempotent; a fresh
#                     clone initialises its data directories on first start)
#   stack.sh stop     stop what the stack started, newest first, by pid file
#   stack.sh status   one line per server
#   stack.sh banner   how to connect
#   stack.sh reset    stop, then delete .run/ (all data)
#
# Servers, in start order:
#   redis          127.0.0.1:16379, or with MINICHAT_REDIS=cluster (make run
#                  REDIS=cluster) a Redis Cluster of three masters and three
#                  replicas on 127.0.0.1:17000-17005 (bus ports 17100-17105)
#   mysql-primary  127.0.0.1:13306  (MariaDB, binlog, GTID; buffer pool 256 MB)
#   mysql-replica  127.0.0.1:13307  (read-only replica of the primary; buffer
#                  pool 2 GB, or MINICHAT_MYSQL_REPLICA_POOL=256M etc.)
#   kafka          127.0.0.1:19092  (KRaft broker+controller, controller 19093),
#                  TLS listener 19094 (client certificates required) and
#                  SASL_SSL listener 19095 (PLAIN, user "minichat")
#   MariaDB and Kafka serve TLS with certificates of a backend dev CA made
#   by openssl into .run/backend/ on first start (backend_tls_setup), which
#   also holds the password of the MySQL user minichat_svc (REQUIRE SSL) and
#   of the Kafka SASL user.  With MINICHAT_TLS=1 the relay-workers and the
#   consumer use them: Kafka over TLS with a client certificate, MySQL as
#   minichat_svc with mysql_ssl = verify (docs/operations-security.md);
#   otherwise plaintext, as root.
#   relay-a/b      gRPC 127.0.0.1:17051/17052 with mutual TLS (a mesh CA and
#                  a certificate per node made by openssl into .run/mesh/ on
#                  first start), unix socket .run/relay-X/relay.sock;
#                  MINICHAT_RELAY_FANOUT=durable starts them with
#                  `fanout = durable` (default admitted), MINICHAT_PEER_STREAM=off
#                  with `peer_stream = off` (default on); /metrics, /status
#                  and /ready on http://127.0.0.1:17061/17062
#   consumer       roomlist-consumer; /metrics, /status and /ready on
#                  http://127.0.0.1:17063
#   nginx-a/b      http://127.0.0.1:8080 / :8081 (the web client at /, demo tokens,
#                  metrics at /metrics with a scrape config in .run/prometheus.yml);
#                  with MINICHAT_TLS=1 (make run TLS=1) the same ports speak
#                  https:// and wss:// only (HTTP/2 by ALPN for REST), with a
#                  server certificate of a dev CA made by openssl into
#                  .run/tls/ on first start (ca.crt is what clients trust)
#
# Every start waits for a readiness check (a ping, a query, an open port, a
# log line) with a timeout; on failure it prints the tail of that server's
# log and exits non-zero.  Nothing is ever stopped by process name: only the
# pids recorded in .run/*/ pid files, after checking that the pid still runs
# the program the stack started there.
#
# Redis, MariaDB and Kafka are launched first and checked afterwards, so their
# start-up times overlap (Kafka's JVM dominates a cold start).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
RUN=${MINICHAT_RUN:-$top/.run}
CONF=$top/conf
BIN=$top/build/bin
# the relay-workers' and the roomlist-consumer's binaries: MINICHAT_SERVICE_BIN
# names another directory (make test's sanitizer pass: build/asan/bin)
SVC_BIN=${MINICHAT_SERVICE_BIN:-$BIN}
KAFKA_LIBS=$top/.cache/kafka/libs

# MINICHAT_RUN and MINICHAT_PORT_OFFSET run a second, independent stack
# (e.g. MINICHAT_RUN=/tmp/mc2 MINICHAT_PORT_OFFSET=1000 for CI jobs side by
# side); tests/integration reads the same two variables.
OFF=${MINICHAT_PORT_OFFSET:-0}
REDIS_PORT=$((16379 + OFF))
# single (one Redis) or cluster; nginx and the consumer are configured for it
REDIS_MODE=${MINICHAT_REDIS:-single}
CLUSTER_PORT=$((17000 + OFF))
CLUSTER_BUS_PORT=$((17100 + OFF))
CLUSTER_NODES=6
MYSQL_PRIMARY_PORT=$((13306 + OFF))
MYSQL_REPLICA_PORT=$((13307 + OFF))
# InnoDB buffer pools; MINICHAT_MYSQL_REPLICA_POOL=256M gives the replica the
# primary's (scenario 5's room then no longer fits: its deep pages come from disk)
MYSQL_PRIMARY_POOL=256M
MYSQL_REPLICA_POOL=${MINICHAT_MYSQL_REPLICA_POOL:-2G}
[[ $MYSQL_REPLICA_POOL =~ ^[1-9][0-9]*[MG]$ ]] || { echo "stack: MINICHAT_MYSQL_REPLICA_POOL must be like 256M or 2G, not \"$MYSQL_REPLICA_POOL\"" >&2; exit 2; }
KAFKA_PORT=$((19092 + OFF))
KAFKA_CONTROLLER_PORT=$((19093 + OFF))
KAFKA_SSL_PORT=$((19094 + OFF))
KAFKA_SASL_PORT=$((19095 + OFF))
KAFKA_TOPIC=minichat.messages
# offline-push events of the roomlist-consumer (docs/push.md)
KAFKA_PUSH_TOPIC=minichat.push
KAFKA_PARTITIONS=4
# below the ephemeral range (32768-60999), so no client socket can hold it
RELAY_A_PORT=$((17051 + OFF))
RELAY_B_PORT=$((17052 + OFF))
# the services' /metrics, /status and /ready (http_listen)
RELAY_A_HTTP_PORT=$((17061 + OFF))
RELAY_B_HTTP_PORT=$((17062 + OFF))
CONSUMER_HTTP_PORT=$((17063 + OFF))
NGINX_A_PORT=$((8080 + OFF))
NGINX_B_PORT=$((8081 + OFF))
MODULE=$top/build/nginx/ngx_http_minichat_module.so
# 0 or 1: nginx-a/b serve TLS on their ports (see tls_setup).  Unset: a
# start is plain; status and banner describe the running stack's mode
TLS=${MINICHAT_TLS:-}
if [ -z "$TLS" ]; then
    case ${1:-} in
        start|restart) TLS=0 ;;
        *) TLS=$(cat "$RUN/.tls-mode" 2>/dev/null || echo 0) ;;
    esac
fi
TLS_DIR=$RUN/tls
# the relay-workers' fanout key (admitted or durable) for those started now
RELAY_FANOUT=${MINICHAT_RELAY_FANOUT:-admitted}
# the relay-workers' peer_stream key (on or off) for those started now
RELAY_PEER_STREAM=${MINICHAT_PEER_STREAM:-on}
# the relay-workers' kafka_compression key for those started now
RELAY_KAFKA_COMPRESSION=${MINICHAT_KAFKA_COMPRESSION:-none}
# the roomlist-consumer's bulk_insert key (on or off) when it is started
CONSUMER_BULK_INSERT=${MINICHAT_CONSUMER_BULK_INSERT:-on}
# the relay-workers' CA and certificates for their mutual TLS (mesh_setup)
MESH_DIR=$RUN/mesh
# the backend dev CA, MariaDB's and Kafka's certificates, the services'
# client certificate and the backend passwords (backend_tls_setup)
BACKEND_DIR=$RUN/backend
MYSQL_SVC_USER=minichat_svc
KAFKA_SASL_USER=minichat
if [ "$TLS" = 1 ]; then SCHEME=https WS_SCHEME=wss; else SCHEME=http WS_SCHEME=ws; fi
SECRET_FILE=$CONF/dev-jwt-secret
# the server API's keys (server_api_keys), made once per run directory
SERVER_API_KEYS=$RUN/server-api.keys

# Timeouts (seconds) for readiness checks.
T_REDIS=${T_REDIS:-15}
T_MYSQL=${T_MYSQL:-60}
T_KAFKA=${T_KAFKA:-90}
T_SERVICE=${T_SERVICE:-20}
T_STOP=${T_STOP:-15}

# The broker's JVM: C1 only, one compiler thread.  With C2 (the JVM's default)
# the compilers spend ~10 CPU-s before the first message and more than the
# request handling itself for the first quarter of an hour; this stack is
# restarted for every run on 2 shared cores and never earns that back
# (docs/operations-kafka.md; a long-running production broker keeps C2).
KAFKA_JAVA_OPTS=${KAFKA_JAVA_OPTS:--Xmx512m -Xms256m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:TieredStopAtLevel=1 -XX:CICompilerCount=1 -Djava.awt.headless=true}
TOOL_JAVA_OPTS="-Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xshare:auto"

say()  { printf 'stack: %s\n' "$*"; }
warn() { printf 'stack: WARNING: %s\n' "$*" >&2; }
die()  { printf 'stack: ERROR: %s\n' "$*" >&2; exit 1; }

now_ms() { date +%s%3N; }

# fail NAME LOGFILE MESSAGE: print the message and the tail of a log, exit 1.
fail() {
    local name=$1 logf=$2 msg=$3
    printf 'stack: ERROR: %s: %s\n' "$name" "$msg" >&2
    if [ -n "$logf" ] && [ -f "$logf" ]; then
        printf 'stack: ---- last lines of %s ----\n' "$logf" >&2
        tail -n 30 "$logf" >&2
        printf 'stack: ----\n' >&2
    fi
    exit 1
}

# port_open PORT: 0 when something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# read_pid PIDFILE: the pid in the file, or nothing.
read_pid() {
    [ -s "$1" ] || return 0
    local p
    p=$(tr -dc '0-9' < "$1")
    [ -n "$p" ] && echo "$p"
    return 0
}

# pid_runs PID PATTERN: 0 when PID is alive and its command line contains
# PATTERN (guards against a stale pid file naming a recycled pid).
pid_runs() {
    local pid=$1 pat=$2
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "$pat"
}

# live_pid PIDFILE PATTERN: prints the pid when it runs our program.
live_pid() {
    local pid
    pid=$(read_pid "$1")
    if [ -n "$pid" ] && pid_runs "$pid" "$2"; then
        echo "$pid"
    fi
    return 0
}

# wait_until TIMEOUT CMD...: run CMD every 0.1 s until it succeeds; 1 on timeout.
wait_until() {
    local deadline=$(( $(now_ms) + $1 * 1000 ))
    shift
    while :; do
        "$@" && return 0
        [ "$(now_ms)" -ge "$deadline" ] && return 1
        sleep 0.1
    done
}

# wait_pid_exit PID TIMEOUT: 0 when the pid is gone within TIMEOUT seconds.
wait_pid_exit() {
    local pid=$1
    wait_until "$2" pid_gone "$pid"
}
# A zombie counts as gone: our servers are reparented to pid 1, which may
# reap them only seconds later.
pid_gone() {
    local st
    kill -0 "$1" 2>/dev/null || return 0
    st=$(cut -d')' -f2 "/proc/$1/stat" 2>/dev/null | cut -d' ' -f2) || return 0
    [ -z "$st" ] || [ "$st" = Z ]
}

# stop_pid NAME PIDFILE PATTERN [SIGNAL]: signal our process, wait, SIGKILL
# after T_STOP seconds with a warning.
stop_pid() {
    local name=$1 pidf=$2 pat=$3 sig=${4:-TERM} pid
    pid=$(live_pid "$pidf" "$pat")
    if [ -z "$pid" ]; then
        rm -f "$pidf"
        return 0
    fi
    kill "-$sig" "$pid" 2>/dev/null || true
    if ! wait_pid_exit "$pid" "$T_STOP"; then
        warn "$name (pid $pid) still running ${T_STOP}s after SIG$sig; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_pid_exit "$pid" 5 || warn "$name (pid $pid) survived SIGKILL"
    fi
    rm -f "$pidf"
    say "stopped $name"
}

# tls_pick A [B]: A with MINICHAT_TLS=1, else B (default empty): how the
# services reach Kafka and MySQL in this mode
tls_pick() { if [ "$TLS" = 1 ]; then echo "$1"; else echo "${2:-}"; fi; }
# the brokers the services use: the TLS listener with MINICHAT_TLS=1
kafka_brokers() { echo "127.0.0.1:$(tls_pick "$KAFKA_SSL_PORT" "$KAFKA_PORT")"; }

# render TEMPLATE OUT [EXTRA SED ARGS...]: substitute the @VARS@ we know.
render() {
    local in=$1 out=$2
    shift 2
    sed -e "s|@TOP@|$top|g" -e "s|@RUN@|$RUN|g" -e "s|@CONF@|$CONF|g" \
        -e "s|@REDIS_PORT@|$REDIS_PORT|g" \
        -e "s|@REDIS_DIRECTIVE@|$(redis_directive)|g" -e "s|@REDIS_ADDRS@|$(redis_addrs)|g" \
        -e "s|@MYSQL_PRIMARY_PORT@|$MYSQL_PRIMARY_PORT|g" \
        -e "s|@MYSQL_REPLICA_PORT@|$MYSQL_REPLICA_PORT|g" \
        -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" \
        -e "s|@KAFKA_CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
        -e "s|@KAFKA_BROKERS@|$(kafka_brokers)|g" \
        -e "s|@KAFKA_SSL_PORT@|$KAFKA_SSL_PORT|g" -e "s|@KAFKA_SASL_PORT@|$KAFKA_SASL_PORT|g" \
        -e "s|@BACKEND_DIR@|$BACKEND_DIR|g" \
        -e "s|@KAFKA_SECURITY_PROTOCOL@|$(tls_pick ssl plaintext)|g" \
        -e "s|@KAFKA_SSL_CA@|$(tls_pick "$BACKEND_DIR/ca.crt")|g" \
        -e "s|@KAFKA_SSL_CERT@|$(tls_pick "$BACKEND_DIR/service.crt")|g" \
        -e "s|@KAFKA_SSL_KEY@|$(tls_pick "$BACKEND_DIR/service.key")|g" \
        -e "s|@MYSQL_USER@|$(tls_pick $MYSQL_SVC_USER root)|g" \
        -e "s|@MYSQL_PASSWORD_FILE@|$(tls_pick "$BACKEND_DIR/mysql-svc.password")|g" \
        -e "s|@MYSQL_SSL@|$(tls_pick verify off)|g" \
        -e "s|@MYSQL_SSL_CA@|$(tls_pick "$BACKEND_DIR/ca.crt")|g" \
        -e "s|@KAFKA_TOPIC@|$KAFKA_TOPIC|g" -e "s|@KAFKA_PUSH_TOPIC@|$KAFKA_PUSH_TOPIC|g" \
        -e "s|@MODULE@|$MODULE|g" -e "s|@SECRET_FILE@|$SECRET_FILE|g" \
        -e "s|@SERVER_API_KEYS@|$SERVER_API_KEYS|g" \
        "$@" "$in" > "$out.tmp"
    mv "$out.tmp" "$out"
}

# ---------------------------------------------------------------------------
# Redis

REDIS_DIR=$RUN/redis
redis_pid() { live_pid "$REDIS_DIR/redis.pid" "redis-server 127.0.0.1:$REDIS_PORT"; }
redis_ping() { [ "$(redis-cli -h 127.0.0.1 -p $REDIS_PORT ping 2>/dev/null)" = PONG ]; }

redis_launch() {
    if [ -n "$(redis_pid)" ]; then
        if redis_ping; then say "redis already running"; else REDIS_LAUNCHED=1; fi
        return 0
    fi
    port_open $REDIS_PORT && die "redis: port $REDIS_PORT is taken by a process the stack did not start"
    mkdir -p "$REDIS_DIR/data"
    render "$CONF/redis.conf.in" "$REDIS_DIR/redis.conf"
    redis-server "$REDIS_DIR/redis.conf" > "$REDIS_DIR/launch.log" 2>&1 9>&- \
        || fail redis "$REDIS_DIR/redis.log" "redis-server did not start ($(cat "$REDIS_DIR/launch.log"))"
    REDIS_LAUNCHED=1
}

redis_ready() {
    [ "${REDIS_LAUNCHED:-0}" = 1 ] || return 0
    wait_until "$T_REDIS" redis_ping \
        || fail redis "$REDIS_DIR/redis.log" "no PONG on 127.0.0.1:$REDIS_PORT within ${T_REDIS}s"
    say "redis ready on 127.0.0.1:$REDIS_PORT"
}

# ---------------------------------------------------------------------------
# Redis Cluster (MINICHAT_REDIS=cluster)

CLUSTER_DIR=$RUN/redis-cluster
cnode_port() { echo $((CLUSTER_PORT + $1)); }
cnode_dir() { echo "$CLUSTER_DIR/$(cnode_port "$1")"; }
cnode_pid() { live_pid "$(cnode_dir "$1")/redis.pid" "redis-server 127.0.0.1:$(cnode_port "$1")"; }
cnode_cli() { local i=$1; shift; redis-cli -h 127.0.0.1 -p "$(cnode_port "$i")" "$@"; }

# what nginx's template and the consumer's get for the Redis of this mode
redis_directive() {
    local i out
    if [ "$REDIS_MODE" = cluster ]; then
        out="minichat_redis_cluster"
        for ((i = 0; i < CLUSTER_NODES; i++)); do out="$out 127.0.0.1:$(cnode_port $i)"; done
        echo "$out"
    else
        echo "minichat_redis 127.0.0.1:$REDIS_PORT"
    fi
}
redis_addrs() {
    local i out=""
    if [ "$REDIS_MODE" = cluster ]; then
        for ((i = 0; i < CLUSTER_NODES; i++)); do out="$out${out:+,}127.0.0.1:$(cnode_port $i)"; done
        echo "$out"
    else
        echo "127.0.0.1:$REDIS_PORT"
    fi
}

cluster_launch() {
    local i d
    for ((i = 0; i < CLUSTER_NODES; i++)); do
        d=$(cnode_dir $i)
        if [ -n "$(cnode_pid $i)" ]; then continue; fi
        port_open "$(cnode_port $i)" && die "redis cluster: port $(cnode_port $i) is taken by a process the stack did not start"
        mkdir -p "$d/data"
        render "$CONF/redis-cluster.conf.in" "$d/redis.conf" -e "s|@NODE_PORT@|$(cnode_port $i)|g" \
            -e "s|@NODE_DIR@|$d|g" -e "s|@BUS_PORT@|$((CLUSTER_BUS_PORT + i))|g"
        redis-server "$d/redis.conf" > "$d/launch.log" 2>&1 9>&- \
            || fail "redis-$(cnode_port $i)" "$d/redis.log" "redis-server did not start ($(cat "$d/launch.log"))"
    done
}

cluster_all_ok() {
    local i
    for ((i = 0; i < CLUSTER_NODES; i++)); do
        cnode_cli $i cluster info 2>/dev/null | grep -q '^cluster_state:ok' || return 1
    done
}
cluster_pinged() {
    local i
    for ((i = 0; i < CLUSTER_NODES; i++)); do
        [ "$(cnode_cli $i ping 2>/dev/null)" = PONG ] || return 1
    done
}

cluster_ready() {
    local i nodes=""
    wait_until "$T_REDIS" cluster_pinged \
        || fail redis-cluster "$(cnode_dir 0)/redis.log" "not every cluster node answers PING within ${T_REDIS}s"
    # a fresh cluster (no slot assigned anywhere yet) is created once; after
    # that the nodes find each other again from their nodes.conf
    if cnode_cli 0 cluster info | grep -q '^cluster_slots_assigned:0'; then
        for ((i = 0; i < CLUSTER_NODES; i++)); do nodes="$nodes 127.0.0.1:$(cnode_port $i)"; done
        # shellcheck disable=SC2086
        redis-cli --cluster create $nodes --cluster-replicas 1 --cluster-yes > "$CLUSTER_DIR/create.log" 2>&1 \
            || fail redis-cluster "$CLUSTER_DIR/create.log" "redis-cli --cluster create failed"
    fi
    wait_until "$T_REDIS" cluster_all_ok \
        || fail redis-cluster "$(cnode_dir 0)/redis.log" "cluster_state is not ok on every node within ${T_REDIS}s"
    say "redis cluster ready on 127.0.0.1:$(cnode_port 0)-$(cnode_port $((CLUSTER_NODES - 1)))"
}

cluster_stop() {
    local i pid d any=0
    for ((i = 0; i < CLUSTER_NODES; i++)); do
        d=$(cnode_dir $i)
        pid=$(cnode_pid $i)
        if [ -z "$pid" ]; then rm -f "$d/redis.pid"; continue; fi
        any=1
        cnode_cli $i shutdown > /dev/null 2>&1 || true
        if ! wait_pid_exit "$pid" "$T_STOP"; then
            warn "redis $(cnode_port $i) (pid $pid) ignored SHUTDOWN; sending SIGTERM"
            stop_pid "redis-$(cnode_port $i)" "$d/redis.pid" "redis-server 127.0.0.1:$(cnode_port $i)"
        fi
        rm -f "$d/redis.pid"
    done
    [ $any = 0 ] || say "stopped redis cluster"
}

redis_stop() {
    local pid
    pid=$(redis_pid)
    if [ -z "$pid" ]; then rm -f "$REDIS_DIR/redis.pid"; return 0; fi
    # SHUTDOWN flushes the append-only file; no RDB snapshot is configured.
    redis-cli -h 127.0.0.1 -p $REDIS_PORT shutdown > /dev/null 2>&1 || true
    wait_pid_exit "$pid" "$T_STOP" || {
        warn "redis (pid $pid) ignored SHUTDOWN; sending SIGTERM"
        stop_pid redis "$REDIS_DIR/redis.pid" "redis-server 127.0.0.1:$REDIS_PORT"
    }
    rm -f "$REDIS_DIR/redis.pid"
    say "stopped redis"
}

# ---------------------------------------------------------------------------
# MariaDB primary and replica

mysql_dir() { echo "$RUN/mysql-$1"; }
mysql_port() { if [ "$1" = primary ]; then echo $MYSQL_PRIMARY_PORT; else echo $MYSQL_REPLICA_PORT; fi; }
mysql_pid() { live_pid "$(mysql_dir "$1")/mysqld.pid" "--datadir=$(mysql_dir "$1")/data "; }

# sql ROLE ARGS...: the mariadb client as root over TCP (no password).
sql() {
    local role=$1
    shift
    mariadb --no-defaults --protocol=TCP -h127.0.0.1 -P"$(mysql_port "$role")" -uroot \
        --connect-timeout=2 "$@"
}
# sql_sock ROLE ARGS...: the same over the server's unix socket (root@localhost).
sql_sock() {
    local role=$1
    shift
    mariadb --no-defaults -S "$(mysql_dir "$role")/mysqld.sock" -uroot --connect-timeout=2 "$@"
}
mysql_ping() { sql "$1" -N -e 'select 1' > /dev/null 2>&1; }
mysql_sock_ping() { sql_sock "$1" -N -e 'select 1' > /dev/null 2>&1; }

mysql_launch() {
    local role=$1 d port sid extra pool
    d=$(mysql_dir "$role")
    port=$(mysql_port "$role")
    local running
    running=$(mysql_pid "$role")
    if [ -n "$running" ]; then
        if mysql_ping "$role"; then
            say "mysql-$role already running"
        else
            # Still starting (or a root@127.0.0.1 grant missing): wait for it.
            eval "MYSQL_LAUNCHED_$role=$running"
        fi
        return 0
    fi
    port_open "$port" && die "mysql-$role: port $port is taken by a process the stack did not start"
    mkdir -p "$d"
    if [ ! -f "$d/data/.minichat-initialised" ]; then
        rm -rf "$d/data"
        mariadb-install-db --no-defaults --datadir="$d/data" --user=root \
            --auth-root-authentication-method=normal --skip-test-db \
            > "$d/install.log" 2>&1 || fail "mysql-$role" "$d/install.log" "mariadb-install-db failed"
        touch "$d/data/.minichat-initialised"
    fi
    # The buffer pools (docs/operations.md "Sizing"): the primary is written,
    # never paged; the replica answers history pages, and a page whose
    # 16 KB leaf is not in its pool is a disk read (bench scenario 5's 10M-row
    # room is 1.7 GB), and it saves its whole pool's page list at shutdown to
    # read it back in the background after a start.  InnoDB takes the pool's
    # memory as pages come in, so a test stack that holds a few MB uses a few
    # MB and starts as fast.
    if [ "$role" = primary ]; then
        sid=1
        pool=$MYSQL_PRIMARY_POOL
        extra=(--log-bin="$d/data/binlog" --binlog-format=ROW)
    else
        sid=2
        pool=$MYSQL_REPLICA_POOL
        extra=(--innodb-buffer-pool-dump-pct=100 --log-bin="$d/data/binlog" --binlog-format=ROW --read-only=1
               --relay-log="$d/data/relay" --log-slave-updates=1)
    fi
    : > "$d/launch.log"
    setsid mariadbd --no-defaults --datadir="$d/data" --socket="$d/mysqld.sock" --port="$port" \
        --bind-address=127.0.0.1 --server-id=$sid --pid-file="$d/mysqld.pid" --user=root \
        --log-error="$d/error.log" --gtid-strict-mode=1 --skip-name-resolve \
        --max-connections=1000 --innodb-buffer-pool-size="$pool" "${extra[@]}" \
        --ssl-ca="$BACKEND_DIR/ca.crt" --ssl-cert="$BACKEND_DIR/mysql.crt" --ssl-key="$BACKEND_DIR/mysql.key" \
        < /dev/null >> "$d/launch.log" 2>&1 9>&- &
    # mariadbd writes the same pid there once it is up; write it now so that a
    # failed start can still be stopped.
    echo $! > "$d/mysqld.pid"
    eval "MYSQL_LAUNCHED_$role=$!"
}

# mysql_wait_up ROLE: wait for the server to answer over its socket.
mysql_wait_up() {
    local role=$1 d
    d=$(mysql_dir "$role")
    local launched
    eval "launched=\${MYSQL_LAUNCHED_$role:-}"
    [ -n "$launched" ] || return 0
    wait_until "$T_MYSQL" mysql_up_or_dead "$role" "$launched" \
        || fail "mysql-$role" "$d/error.log" "no answer on $d/mysqld.sock within ${T_MYSQL}s"
    ! pid_gone "$launched" || fail "mysql-$role" "$d/error.log" "mariadbd exited during start-up"
}
mysql_up_or_dead() { mysql_sock_ping "$1" || pid_gone "$2"; }

# Root over TCP from 127.0.0.1 without a password (dev stack only).  Not
# written to the binlog: each server gets it locally.
ROOT_TCP_SQL="SET sql_log_bin=0;
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
SET sql_log_bin=1;"

# mysql_migrate: create the database and apply migrations/NNN_*.sql once each
# (recorded in schema_migrations), on the primary; they replicate.
mysql_migrate() {
    sql primary -e 'CREATE DATABASE IF NOT EXISTS minichat CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci' \
        || fail mysql-primary "$(mysql_dir primary)/error.log" "cannot create database minichat"
    local f base ver done_
    for f in "$top"/migrations/*.sql; do
        [ -e "$f" ] || continue
        base=$(basename "$f")
        ver=$((10#${base%%_*}))
        done_=$(sql primary -N minichat -e "SELECT COUNT(*) FROM schema_migrations WHERE version=$ver" 2>/dev/null || echo 0)
        if [ "$done_" = 1 ]; then
            continue
        fi
        sql primary minichat < "$f" 2> "$RUN/mysql-primary/migrate.err" \
            || fail mysql-primary "$RUN/mysql-primary/migrate.err" "migration $base failed"
        sql primary minichat -e "INSERT IGNORE INTO schema_migrations (version) VALUES ($ver)"
        say "applied migration $base"
    done
}

# mysql_service_user: the services' own MySQL user for MINICHAT_TLS=1,
# minichat_svc@127.0.0.1, REQUIRE SSL, all rights on minichat.*, its
# password from $BACKEND_DIR (set again at every start, in case the file was
# made anew).  Made on the primary; it replicates.  The password goes to the
# client on stdin, not on its command line.
mysql_service_user() {
    local pw
    pw=$(cat "$BACKEND_DIR/mysql-svc.password")
    sql primary <<EOF || fail mysql-primary "$(mysql_dir primary)/error.log" "cannot create the MySQL user $MYSQL_SVC_USER"
CREATE USER IF NOT EXISTS '$MYSQL_SVC_USER'@'127.0.0.1' IDENTIFIED BY '$pw' REQUIRE SSL;
ALTER USER '$MYSQL_SVC_USER'@'127.0.0.1' IDENTIFIED BY '$pw' REQUIRE SSL;
GRANT ALL PRIVILEGES ON minichat.* TO '$MYSQL_SVC_USER'@'127.0.0.1';
EOF
}

replica_field() {
    sql replica -e 'SHOW SLAVE STATUS\G' 2>/dev/null | sed -n "s/^ *$1: //p"
}

mysql_setup() {
    local d
    d=$(mysql_dir primary)
    if [ -n "${MYSQL_LAUNCHED_primary:-}" ]; then
        sql_sock primary -e "$ROOT_TCP_SQL" || fail mysql-primary "$d/error.log" "cannot create root@127.0.0.1"
        wait_until 5 mysql_ping primary || fail mysql-primary "$d/error.log" "root@127.0.0.1 cannot log in over TCP"
        say "mysql-primary ready on 127.0.0.1:$MYSQL_PRIMARY_PORT"
    fi
    d=$(mysql_dir replica)
    if [ -n "${MYSQL_LAUNCHED_replica:-}" ]; then
        sql_sock replica -e "$ROOT_TCP_SQL" || fail mysql-replica "$d/error.log" "cannot create root@127.0.0.1"
        wait_until 5 mysql_ping replica || fail mysql-replica "$d/error.log" "root@127.0.0.1 cannot log in over TCP"
    fi
    # Replication: configure once; afterwards the replica resumes by itself.
    if [ -z "$(replica_field Master_Host)" ]; then
        sql replica -e "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=$MYSQL_PRIMARY_PORT,
            MASTER_USER='root', MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1;
            START SLAVE;" || fail mysql-replica "$d/error.log" "CHANGE MASTER failed"
    elif [ "$(replica_field Slave_SQL_Running)" != Yes ] || [ "$(replica_field Slave_IO_Running)" != Yes ]; then
        sql replica -e 'START SLAVE' > /dev/null 2>&1 || true
    fi
    mysql_service_user
    mysql_migrate
    # The replica is ready when both threads run and it has applied
    # everything the primary has written so far (the migrations included).
    local pos
    pos=$(sql primary -N -e 'SELECT @@gtid_binlog_pos')
    if ! wait_until "$T_MYSQL" replica_running; then
        fail mysql-replica "$d/error.log" "replication not running: IO=$(replica_field Slave_IO_Running) \
SQL=$(replica_field Slave_SQL_Running) $(replica_field Last_IO_Error) $(replica_field Last_SQL_Error)"
    fi
    if [ -n "$pos" ]; then
        local r
        r=$(sql replica -N -e "SELECT MASTER_GTID_WAIT('$pos', $T_MYSQL)")
        [ "$r" = 0 ] || fail mysql-replica "$d/error.log" "replica did not reach GTID $pos within ${T_MYSQL}s \
($(replica_field Last_SQL_Error))"
    fi
    sql replica -N minichat -e 'SELECT COUNT(*) FROM schema_migrations' > /dev/null 2>&1 \
        || fail mysql-replica "$d/error.log" "migrations not visible on the replica"
    [ -n "${MYSQL_LAUNCHED_replica:-}" ] && say "mysql-replica ready on 127.0.0.1:$MYSQL_REPLICA_PORT (replicating)"
    return 0
}
replica_running() {
    local st
    st=$(sql replica -e 'SHOW SLAVE STATUS\G' 2>/dev/null) || return 1
    grep -q '^ *Slave_IO_Running: Yes' <<< "$st" && grep -q '^ *Slave_SQL_Running: Yes' <<< "$st"
}

mysql_stop() {
    local role=$1 d pid
    d=$(mysql_dir "$role")
    pid=$(mysql_pid "$role")
    if [ -z "$pid" ]; then rm -f "$d/mysqld.pid"; return 0; fi
    if [ "$role" = replica ]; then
        sql_sock replica -e 'STOP SLAVE' > /dev/null 2>&1 || true
    fi
    # SIGTERM is mariadbd's clean shutdown (the same as mariadb-admin shutdown).
    stop_pid "mysql-$role" "$d/mysqld.pid" "--datadir=$d/data " TERM
}

# ---------------------------------------------------------------------------
# Kafka

KAFKA_DIR=$RUN/kafka
kafka_pid() { live_pid "$KAFKA_DIR/kafka.pid" "kafka.Kafka $KAFKA_DIR/server.properties"; }
# setup.sh fetches Kafka with log4j's SLF4J 1.7 binding, which Kafka 4.1 logs through.
kafka_cp() { echo "$KAFKA_LIBS/*"; }
kafka_java() { timeout 120 java $TOOL_JAVA_OPTS -Dlog4j2.configurationFile="$KAFKA_DIR/tools-log4j2.properties" -cp "$(kafka_cp)" "$@"; }

kafka_launch() {
    local running
    running=$(kafka_pid)
    if [ -n "$running" ]; then
        if port_open $KAFKA_PORT; then say "kafka already running"; else KAFKA_LAUNCHED=$running; fi
        return 0
    fi
    [ -d "$KAFKA_LIBS" ] || die "kafka: $KAFKA_LIBS missing; run scripts/setup.sh (make setup)"
    port_open $KAFKA_PORT && die "kafka: port $KAFKA_PORT is taken by a process the stack did not start"
    port_open $KAFKA_CONTROLLER_PORT && die "kafka: port $KAFKA_CONTROLLER_PORT is taken by a process the stack did not start"
    mkdir -p "$KAFKA_DIR/data"
    render "$CONF/kafka.properties.in" "$KAFKA_DIR/server.properties" \
        -e "s|@KAFKA_SASL_USER@|$KAFKA_SASL_USER|g" -e "s|@KAFKA_SASL_PASSWORD@|$(cat "$BACKEND_DIR/kafka-sasl.password")|g"
    chmod 600 "$KAFKA_DIR/server.properties"
    render "$CONF/kafka-log4j2.properties.in" "$KAFKA_DIR/log4j2.properties"
    sed -e 's|^appender.file.fileName = .*|appender.file.fileName = '"$KAFKA_DIR"'/tools.log|' \
        "$KAFKA_DIR/log4j2.properties" > "$KAFKA_DIR/tools-log4j2.properties"
    if [ ! -f "$KAFKA_DIR/data/meta.properties" ]; then
        local id
        # A random base64url cluster id of 16 bytes (what `random-uuid` prints).
        # A leading '-' would read as an option (1 start in 64 failed so).
        id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=' | sed 's/^-/A/')
        kafka_java kafka.tools.StorageTool format --standalone -t "$id" \
            -c "$KAFKA_DIR/server.properties" > "$KAFKA_DIR/format.log" 2>&1 \
            || fail kafka "$KAFKA_DIR/format.log" "storage format failed"
        rm -f "$KAFKA_DIR"/topic-*.ok
    fi
    : > "$KAFKA_DIR/stdout.log"
    [ -s "$KAFKA_DIR/server.log" ] && mv -f "$KAFKA_DIR/server.log" "$KAFKA_DIR/server.log.prev"
    setsid java $KAFKA_JAVA_OPTS -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" \
        -Dkafka.logs.dir="$KAFKA_DIR" -cp "$(kafka_cp)" kafka.Kafka "$KAFKA_DIR/server.properties" \
        < /dev/null >> "$KAFKA_DIR/stdout.log" 2>&1 9>&- &
    echo $! > "$KAFKA_DIR/kafka.pid"
    KAFKA_LAUNCHED=$!
}

kafka_started() {
    ! pid_gone "$KAFKA_LAUNCHED" || return 0   # dead: stop waiting
    port_open $KAFKA_PORT
}

kafka_ready() {
    if [ -n "${KAFKA_LAUNCHED:-}" ]; then
        wait_until "$T_KAFKA" kafka_started \
            || { tail -n 5 "$KAFKA_DIR/stdout.log" >&2;
                 fail kafka "$KAFKA_DIR/server.log" "broker not listening on 127.0.0.1:$KAFKA_PORT within ${T_KAFKA}s"; }
        ! pid_gone "$KAFKA_LAUNCHED" || {
            tail -n 20 "$KAFKA_DIR/stdout.log" >&2
            fail kafka "$KAFKA_DIR/server.log" "broker exited during start-up"
        }
    fi
    # One JVM per topic, once per data directory (a marker per topic: a
    # stack made before the push topic existed gets it at its next start);
    # creating a topic also proves that the admin API works.
    local t
    for t in $KAFKA_TOPIC $KAFKA_PUSH_TOPIC; do
        [ -f "$KAFKA_DIR/topic-$t.ok" ] && continue
        kafka_java org.apache.kafka.tools.TopicCommand \
            --bootstrap-server 127.0.0.1:$KAFKA_PORT --create --if-not-exists --topic $t \
            --partitions $KAFKA_PARTITIONS --replication-factor 1 > "$KAFKA_DIR/topic.log" 2>&1 \
            || fail kafka "$KAFKA_DIR/topic.log" "cannot create topic $t"
        touch "$KAFKA_DIR/topic-$t.ok"
    done
    [ -n "${KAFKA_LAUNCHED:-}" ] && say "kafka ready on 127.0.0.1:$KAFKA_PORT (topics $KAFKA_TOPIC, $KAFKA_PUSH_TOPIC)"
    return 0
}

kafka_stop() {
    stop_pid kafka "$KAFKA_DIR/kafka.pid" "kafka.Kafka $KAFKA_DIR/server.properties" TERM
}

# ---------------------------------------------------------------------------
# relay-workers and the roomlist-consumer

relay_port() { if [ "$1" = a ]; then echo $RELAY_A_PORT; else echo $RELAY_B_PORT; fi; }
relay_http_port() { if [ "$1" = a ]; then echo $RELAY_A_HTTP_PORT; else echo $RELAY_B_HTTP_PORT; fi; }
peer_of() { if [ "$1" = a ]; then echo b; else echo a; fi; }

svc_ok() { [ -f "$CONF/$1.conf.in" ] || { warn "conf/$1.conf.in missing; not starting $1"; return 1; }
           [ -x "$SVC_BIN/$1" ] || { warn "$SVC_BIN/$1 missing (run make); not starting $1"; return 1; }; }

relay_ready_check() {
    local node=$1 pid=$2
    ! pid_gone "$pid" || return 0
    [ -S "$RUN/relay-$node/relay.sock" ] && port_open "$(relay_port "$node")"
}

relay_start() {
    local node=$1 d port peer pid
    d=$RUN/relay-$node
    port=$(relay_port "$node")
    peer=$(peer_of "$node")
    pid=$(live_pid "$d/relay.pid" "$d/relay-worker.conf")
    if [ -n "$pid" ] && [ -S "$d/relay.sock" ] && port_open "$port"; then
        say "relay-$node already running"
        return 0
    fi
    [ -n "$pid" ] && die "relay-$node: pid $pid runs but is not healthy; run stack.sh stop first"
    port_open "$port" && die "relay-$node: port $port is taken by a process the stack did not start"
    mkdir -p "$d"
    rm -f "$d/relay.sock"
    [ -s "$d/relay.log" ] && mv -f "$d/relay.log" "$d/relay.log.prev"
    render "$CONF/relay-worker.conf.in" "$d/relay-worker.conf" \
        -e "s|@NODE@|$node|g" -e "s|@GRPC_PORT@|$port|g" -e "s|@PEER_NODE@|$peer|g" \
        -e "s|@PEER_PORT@|$(relay_port "$peer")|g" -e "s|@RELAY_SOCK@|$d/relay.sock|g" \
        -e "s|@MESH_DIR@|$MESH_DIR|g" -e "s|@PREFIX@|$d|g" -e "s|@FANOUT@|$RELAY_FANOUT|g" \
        -e "s|@PEER_STREAM@|$RELAY_PEER_STREAM|g" -e "s|@KAFKA_COMPRESSION@|$RELAY_KAFKA_COMPRESSION|g" \
        -e "s|@HTTP_PORT@|$(relay_http_port "$node")|g"
    setsid "$SVC_BIN/relay-worker" -c "$d/relay-worker.conf" < /dev/null >> "$d/relay.log" 2>&1 9>&- &
    pid=$!
    echo "$pid" > "$d/relay.pid"
    wait_until "$T_SERVICE" relay_ready_check "$node" "$pid" \
        || fail "relay-$node" "$d/relay.log" "no socket $d/relay.sock or port $port within ${T_SERVICE}s"
    ! pid_gone "$pid" || fail "relay-$node" "$d/relay.log" "relay-worker exited during start-up"
    say "relay-$node ready on 127.0.0.1:$port and $d/relay.sock"
}

consumer_ready_check() {
    ! pid_gone "$2" || return 0
    tail -c +"$1" "$RUN/consumer/consumer.log" 2>/dev/null | grep -q ready
}

consumer_start() {
    local d=$RUN/consumer pid off
    pid=$(live_pid "$d/consumer.pid" "$d/roomlist-consumer.conf")
    if [ -n "$pid" ]; then
        say "consumer already running"
        return 0
    fi
    mkdir -p "$d"
    render "$CONF/roomlist-consumer.conf.in" "$d/roomlist-consumer.conf" \
        -e "s|@NODE@|c1|g" -e "s|@PREFIX@|$d|g" -e "s|@HTTP_PORT@|$CONSUMER_HTTP_PORT|g" \
        -e "s|^bulk_insert .*|bulk_insert     = $CONSUMER_BULK_INSERT|"
    [ -s "$d/consumer.log" ] && mv -f "$d/consumer.log" "$d/consumer.log.prev"
    touch "$d/consumer.log"
    off=$(( $(stat -c %s "$d/consumer.log") + 1 ))
    setsid "$SVC_BIN/roomlist-consumer" -c "$d/roomlist-consumer.conf" < /dev/null >> "$d/consumer.log" 2>&1 9>&- &
    pid=$!
    echo "$pid" > "$d/consumer.pid"
    wait_until "$T_SERVICE" consumer_ready_check "$off" "$pid" \
        || fail consumer "$d/consumer.log" "no \"ready\" line within ${T_SERVICE}s"
    ! pid_gone "$pid" || fail consumer "$d/consumer.log" "roomlist-consumer exited during start-up"
    say "consumer ready"
}

# ---------------------------------------------------------------------------
# nginx

nginx_port() { if [ "$1" = a ]; then echo $NGINX_A_PORT; else echo $NGINX_B_PORT; fi; }
nginx_pid() { live_pid "$RUN/nginx-$1/nginx.pid" "-c $RUN/nginx-$1/nginx.conf "; }
nginx_health() {
    if [ "$TLS" = 1 ]; then
        curl -fsS -o /dev/null --max-time 2 --cacert "$TLS_DIR/ca.crt" "https://127.0.0.1:$1/healthz" 2>/dev/null
    else
        curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$1/healthz" 2>/dev/null
    fi
}
nginx_ready_check() {
    [ -n "$(nginx_pid "$1")" ] || return 0
    nginx_health "$(nginx_port "$1")"
}

nginx_start() {
    local node=$1 d port pid
    d=$RUN/nginx-$node
    port=$(nginx_port "$node")
    pid=$(nginx_pid "$node")
    if [ -n "$pid" ] && nginx_health "$port"; then
        say "nginx-$node already running"
        return 0
    fi
    [ -n "$pid" ] && die "nginx-$node: pid $pid runs but /healthz fails; run stack.sh stop first"
    port_open "$port" && die "nginx-$node: port $port is taken by a process the stack did not start"
    [ -f "$MODULE" ] || { warn "$MODULE missing (run make module); not starting nginx-$node"; return 0; }
    mkdir -p "$d/logs" "$d/tmp"
    # A fresh error log per start, so that check-logs.sh judges this run only.
    [ -s "$d/error.log" ] && mv -f "$d/error.log" "$d/error.log.prev"
    # the template's lines marked @TLS@ are kept only in TLS mode
    local tls_args=(-e "s|@LISTEN_TLS@||g" -e "/^@TLS@/d")
    [ "$TLS" = 1 ] && tls_args=(-e "s|@LISTEN_TLS@| ssl http2|g" -e "s|^@TLS@|     |")
    render "$CONF/nginx.conf.in" "$d/nginx.conf" \
        -e "s|@NODE@|$node|g" -e "s|@PORT@|$port|g" -e "s|@RELAY_SOCK@|$RUN/relay-$node/relay.sock|g" \
        -e "s|@PREFIX@|$d|g" "${tls_args[@]}"
    /usr/sbin/nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log" -t > "$d/configtest.log" 2>&1 \
        || fail "nginx-$node" "$d/configtest.log" "nginx -t rejects $d/nginx.conf"
    /usr/sbin/nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log" > "$d/launch.log" 2>&1 9>&- \
        || fail "nginx-$node" "$d/error.log" "nginx did not start ($(cat "$d/launch.log"))"
    wait_until "$T_SERVICE" nginx_ready_check "$node" \
        || fail "nginx-$node" "$d/error.log" "GET $SCHEME://127.0.0.1:$port/healthz not 200 within ${T_SERVICE}s"
    [ -n "$(nginx_pid "$node")" ] || fail "nginx-$node" "$d/error.log" "nginx exited during start-up"
    say "nginx-$node ready on $SCHEME://127.0.0.1:$port"
}

# dev_ca DIR CN: a dev CA (DIR/ca.crt, DIR/ca.key), ECDSA P-256, 10 years.
# dev_cert DIR NAME CN EKU SAN: DIR/NAME.crt and DIR/NAME.key signed by DIR's
# CA for a year, with the extended key usage and subjectAltName given and the
# key identifiers that strict verifiers (Python 3.13's VERIFY_X509_STRICT)
# require.  Both log to stdout/stderr; the caller collects it.  DEV ONLY.
dev_ca() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
        -subj "/CN=$2" -keyout "$1/ca.key" -out "$1/ca.crt" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
}
dev_cert() {
    local d=$1 name=$2 cn=$3 eku=$4 san=$5
    printf '%s\n' "basicConstraints = critical, CA:FALSE" "keyUsage = critical, digitalSignature" \
        "extendedKeyUsage = $eku" "subjectAltName = $san" \
        "subjectKeyIdentifier = hash" "authorityKeyIdentifier = keyid" > "$d/$name.ext"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj "/CN=$cn" -keyout "$d/$name.key" -out "$d/$name.csr" &&
    openssl x509 -req -in "$d/$name.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
        -days 365 -extfile "$d/$name.ext" -out "$d/$name.crt"
}
# cert_fresh FILE...: every certificate exists and is valid for another day
cert_fresh() {
    local f
    for f in "$@"; do
        [ -s "$f" ] && openssl x509 -checkend 86400 -noout -in "$f" > /dev/null 2>&1 || return 1
    done
}

# tls_setup: the dev CA and nginx's server certificate in $TLS_DIR, made
# once with openssl and kept across restarts (clients trust ca.crt), made
# again when the server certificate expires within a day.  The server
# certificate names 127.0.0.1 and localhost in its SAN (clients check the
# SAN, not the CN).  DEV STACK ONLY.
tls_setup() {
    local t=$TLS_DIR.new
    cert_fresh "$TLS_DIR/server.crt" "$TLS_DIR/ca.crt" && return 0
    command -v openssl > /dev/null || die "openssl not installed; run scripts/setup.sh"
    rm -rf "$t"
    mkdir -p "$t"
    chmod 700 "$t"
    { dev_ca "$t" "MiniChat dev CA" &&
      dev_cert "$t" server localhost serverAuth "IP:127.0.0.1, DNS:localhost"
    } > "$t/openssl.log" 2>&1 || fail tls "$t/openssl.log" "openssl could not make the dev certificates"
    rm -rf "$TLS_DIR"
    mv "$t" "$TLS_DIR"
    say "made a dev CA and a server certificate for 127.0.0.1 in $TLS_DIR (trust ca.crt)"
}

# backend_tls_setup: the backend dev CA in $BACKEND_DIR ("MiniChat dev
# backend CA", not nginx's or the mesh's), MariaDB's and Kafka's server
# certificates (SAN IP:127.0.0.1 and localhost: the services check the
# name), one client certificate for the services (Kafka's TLS listener
# requires one), Kafka's PEM keystore (key then certificate in one file),
# and two random passwords: the MySQL user minichat_svc's and the Kafka SASL
# user's (mode 0600).  Made once, again when a certificate expires within a
# day (a restart of MariaDB and Kafka then picks them up).  DEV STACK ONLY.
backend_tls_setup() {
    local t=$BACKEND_DIR.new
    cert_fresh "$BACKEND_DIR/ca.crt" "$BACKEND_DIR/mysql.crt" "$BACKEND_DIR/kafka.crt" "$BACKEND_DIR/service.crt" \
        && [ -s "$BACKEND_DIR/mysql-svc.password" ] && [ -s "$BACKEND_DIR/kafka-sasl.password" ] && return 0
    command -v openssl > /dev/null || die "openssl not installed; run scripts/setup.sh"
    rm -rf "$t"
    mkdir -p "$t"
    chmod 700 "$t"
    { dev_ca "$t" "MiniChat dev backend CA" &&
      dev_cert "$t" mysql localhost serverAuth "IP:127.0.0.1, DNS:localhost" &&
      dev_cert "$t" kafka localhost serverAuth "IP:127.0.0.1, DNS:localhost" &&
      dev_cert "$t" service minichat-service clientAuth "DNS:minichat-service" &&
      cat "$t/kafka.key" "$t/kafka.crt" > "$t/kafka-keystore.pem" &&
      openssl rand -hex 16 > "$t/mysql-svc.password" &&
      openssl rand -hex 16 > "$t/kafka-sasl.password" &&
      chmod 600 "$t"/*.key "$t"/*.password "$t/kafka-keystore.pem"
    } > "$t/openssl.log" 2>&1 || fail backend-tls "$t/openssl.log" "openssl could not make the backend certificates"
    rm -rf "$BACKEND_DIR"
    mv "$t" "$BACKEND_DIR"
    say "made a backend CA, MariaDB and Kafka certificates and service passwords in $BACKEND_DIR"
}

# mesh_setup: the relay-workers' own CA (not nginx's: a client-facing
# certificate must not open the mesh) and one certificate per node in
# $MESH_DIR, each naming its node (CN and DNS SAN "a" / "b") for both server
# and client use: the relay-workers speak gRPC to each other with mutual TLS
# (peer_tls_* in conf/relay-worker.conf.in).  Made once, again when a
# certificate expires within a day.  DEV STACK ONLY.
mesh_setup() {
    local t=$MESH_DIR.new
    cert_fresh "$MESH_DIR/ca.crt" "$MESH_DIR/relay-a.crt" "$MESH_DIR/relay-b.crt" && return 0
    command -v openssl > /dev/null || die "openssl not installed; run scripts/setup.sh"
    rm -rf "$t"
    mkdir -p "$t"
    chmod 700 "$t"
    { dev_ca "$t" "MiniChat dev mesh CA" &&
      dev_cert "$t" relay-a a "serverAuth, clientAuth" "DNS:a" &&
      dev_cert "$t" relay-b b "serverAuth, clientAuth" "DNS:b"
    } > "$t/openssl.log" 2>&1 || fail mesh "$t/openssl.log" "openssl could not make the mesh certificates"
    rm -rf "$MESH_DIR"
    mv "$t" "$MESH_DIR"
    say "made a mesh CA and relay-worker certificates for nodes a and b in $MESH_DIR"
}

# DEV STACK ONLY: the web client's demo users (fixed small ids; the
# integration tests use random ids from 10^6 up, so they never clash).  Their
# JWTs are minted from the dev secret at every start into
# $RUN/demo/tokens.json, which nginx serves at /demo/tokens.json: the page
# itself never holds the secret.  Valid 7 days; `stack.sh start` re-mints.
DEMO_USERS="1:Alice 2:Bob 3:Carol 4:Dave 5:Erin 6:Frank"
DEMO_TOKEN_TTL=604800

demo_tokens() {
    local d=$RUN/demo f entry id name tok sep=''
    if [ ! -x "$BIN/minichat-token" ]; then
        warn "build/bin/minichat-token missing (run make); the web client has no demo users"
        return 0
    fi
    mkdir -p "$d"
    f=$d/tokens.json
    {
        printf '{"users":['
        for entry in $DEMO_USERS; do
            id=${entry%%:*}
            name=${entry#*:}
            tok=$("$BIN/minichat-token" --secret-file "$SECRET_FILE" --ttl "$DEMO_TOKEN_TTL" "$id") \
                || die "minichat-token failed for demo user $id"
            printf '%s\n {"id":%s,"name":"%s","token":"%s"}' "$sep" "$id" "$name" "$tok"
            sep=,
        done
        printf '\n]}\n'
    } > "$f.tmp"
    mv "$f.tmp" "$f"
}

# DEV STACK ONLY: one random key for the server API (/server/), kept across
# restarts; owner-only, as nginx refuses a key file others can read.  Tests
# and tools read it from here.
server_api_keys() {
    [ -s "$SERVER_API_KEYS" ] && return 0
    mkdir -p "$RUN"
    ( umask 077 && openssl rand -hex 32 > "$SERVER_API_KEYS.tmp" ) \
        || die "openssl could not make the server API key"
    mv "$SERVER_API_KEYS.tmp" "$SERVER_API_KEYS"
}

nginx_stop() {
    local node=$1 d pid
    d=$RUN/nginx-$node
    pid=$(nginx_pid "$node")
    if [ -z "$pid" ]; then rm -f "$d/nginx.pid"; return 0; fi
    # Graceful quit: workers finish and close their sockets (an "open socket
    # left" [alert] in error.log afterwards is a bug check-logs.sh reports).
    local workers w
    workers=$(pgrep -P "$pid" 2>/dev/null || true)
    kill -QUIT "$pid" 2>/dev/null || true
    if ! wait_pid_exit "$pid" "$T_STOP"; then
        warn "nginx-$node (pid $pid) still running ${T_STOP}s after QUIT; sending SIGTERM"
        stop_pid "nginx-$node" "$d/nginx.pid" "-c $d/nginx.conf " TERM
    fi
    # The master waits for its workers, but make sure no worker outlives it.
    for w in $workers; do
        if ! wait_pid_exit "$w" 5 && pid_runs "$w" nginx; then
            warn "nginx-$node worker $w outlived its master; sending SIGKILL"
            kill -KILL "$w" 2>/dev/null || true
        fi
    done
    rm -f "$d/nginx.pid"
    say "stopped nginx-$node"
}

# ---------------------------------------------------------------------------

# preflight: refuse to start when a port we need is held by a process the
# stack did not start (before launching anything).
preflight() {
    local bad=0 n
    check_port() {  # NAME PORT OURPID
        if [ -z "$3" ] && port_open "$2"; then
            printf 'stack: ERROR: %s: port 127.0.0.1:%s is taken by a process the stack did not start\n' "$1" "$2" >&2
            bad=1
        fi
    }
    if [ "$REDIS_MODE" = cluster ]; then
        for ((n = 0; n < CLUSTER_NODES; n++)); do
            check_port "redis-$(cnode_port $n)" "$(cnode_port $n)" "$(cnode_pid $n)"
            check_port "redis-bus-$(cnode_port $n)" $((CLUSTER_BUS_PORT + n)) "$(cnode_pid $n)"
        done
    else
        check_port redis $REDIS_PORT "$(redis_pid)"
    fi
    check_port mysql-primary $MYSQL_PRIMARY_PORT "$(mysql_pid primary)"
    check_port mysql-replica $MYSQL_REPLICA_PORT "$(mysql_pid replica)"
    check_port kafka $KAFKA_PORT "$(kafka_pid)"
    check_port kafka-controller $KAFKA_CONTROLLER_PORT "$(kafka_pid)"
    check_port kafka-ssl $KAFKA_SSL_PORT "$(kafka_pid)"
    check_port kafka-sasl $KAFKA_SASL_PORT "$(kafka_pid)"
    check_port consumer-http $CONSUMER_HTTP_PORT "$(live_pid "$RUN/consumer/consumer.pid" "$RUN/consumer/roomlist-consumer.conf")"
    for n in a b; do
        check_port "relay-$n" "$(relay_port $n)" "$(live_pid "$RUN/relay-$n/relay.pid" "$RUN/relay-$n/relay-worker.conf")"
        check_port "relay-$n-http" "$(relay_http_port $n)" \
            "$(live_pid "$RUN/relay-$n/relay.pid" "$RUN/relay-$n/relay-worker.conf")"
        check_port "nginx-$n" "$(nginx_port $n)" "$(nginx_pid $n)"
    done
    [ $bad = 0 ] || die "free those ports (ss -ltnp) or pick others with MINICHAT_PORT_OFFSET"
}

# prometheus_config: $RUN/prometheus.yml, a scrape config for both nginx
# nodes', both relay-workers' and the consumer's /metrics
# (`prometheus --config.file=$RUN/prometheus.yml`; the stack does not run
# Prometheus itself).
prometheus_config() {
    [ -f "$CONF/prometheus.yml.in" ] || return 0
    local tls_args=(-e "/^@TLS@/d")
    [ "$TLS" = 1 ] && tls_args=(-e "s|^@TLS@||" -e "s|@TLS_CA@|$TLS_DIR/ca.crt|g")
    render "$CONF/prometheus.yml.in" "$RUN/prometheus.yml" \
        -e "s|@SCHEME@|$SCHEME|g" -e "s|@NGINX_A_PORT@|$NGINX_A_PORT|g" -e "s|@NGINX_B_PORT@|$NGINX_B_PORT|g" \
        -e "s|@RELAY_A_HTTP_PORT@|$RELAY_A_HTTP_PORT|g" -e "s|@RELAY_B_HTTP_PORT@|$RELAY_B_HTTP_PORT|g" \
        -e "s|@CONSUMER_HTTP_PORT@|$CONSUMER_HTTP_PORT|g" \
        "${tls_args[@]}"
}

cmd_start() {
    local t0
    t0=$(now_ms)
    command -v redis-server > /dev/null || die "redis-server not installed; run scripts/setup.sh"
    command -v mariadbd > /dev/null || die "mariadbd not installed; run scripts/setup.sh"
    command -v java > /dev/null || die "java not installed; run scripts/setup.sh"
    mkdir -p "$RUN"
    exec 9> "$RUN/.stack.lock"
    flock -w 60 9 || die "another stack.sh holds $RUN/.stack.lock"

    case $REDIS_MODE in single|cluster) ;; *) die "MINICHAT_REDIS must be single or cluster, not \"$REDIS_MODE\"" ;; esac
    # nginx and the consumer are configured for one mode: switching needs a stop
    if [ -s "$RUN/.redis-mode" ] && [ "$(cat "$RUN/.redis-mode")" != "$REDIS_MODE" ] \
        && { [ -n "$(nginx_pid a)" ] || [ -n "$(live_pid "$RUN/consumer/consumer.pid" "$RUN/consumer/roomlist-consumer.conf")" ]; }; then
        die "the stack runs with MINICHAT_REDIS=$(cat "$RUN/.redis-mode"); run stack.sh stop first"
    fi
    echo "$REDIS_MODE" > "$RUN/.redis-mode"
    case $TLS in 0|1) ;; *) die "MINICHAT_TLS must be 0 or 1, not \"$TLS\"" ;; esac
    # nginx listens with TLS or without: switching needs a stop
    if [ -s "$RUN/.tls-mode" ] && [ "$(cat "$RUN/.tls-mode")" != "$TLS" ] \
        && [ -n "$(nginx_pid a)$(nginx_pid b)" ]; then
        die "the stack runs with MINICHAT_TLS=$(cat "$RUN/.tls-mode"); run stack.sh stop first"
    fi
    echo "$TLS" > "$RUN/.tls-mode"

    preflight
    backend_tls_setup
    if [ "$REDIS_MODE" = cluster ]; then cluster_launch; else redis_launch; fi
    mysql_launch primary
    mysql_launch replica
    kafka_launch
    if [ "$REDIS_MODE" = cluster ]; then cluster_ready; else redis_ready; fi
    mysql_wait_up primary
    mysql_wait_up replica
    mysql_setup
    kafka_ready
    local n
    if svc_ok relay-worker; then mesh_setup; fi
    for n in a b; do
        if svc_ok relay-worker; then relay_start "$n"; fi
    done
    if svc_ok roomlist-consumer; then consumer_start; fi
    if [ -f "$CONF/nginx.conf.in" ]; then
        demo_tokens
        server_api_keys
        if [ "$TLS" = 1 ]; then tls_setup; fi
        for n in a b; do nginx_start "$n"; done
        prometheus_config
    else
        warn "conf/nginx.conf.in missing; not starting nginx"
    fi
    say "started in $(( ($(now_ms) - t0) ))ms"
}

cmd_stop() {
    mkdir -p "$RUN"
    exec 9> "$RUN/.stack.lock"
    flock -w 60 9 || die "another stack.sh holds $RUN/.stack.lock"
    local t0 n
    t0=$(now_ms)
    for n in b a; do nginx_stop "$n"; done
    stop_pid consumer "$RUN/consumer/consumer.pid" "$RUN/consumer/roomlist-consumer.conf" TERM
    for n in b a; do stop_pid "relay-$n" "$RUN/relay-$n/relay.pid" "$RUN/relay-$n/relay-worker.conf" TERM; done
    kafka_stop
    mysql_stop replica
    mysql_stop primary
    redis_stop
    cluster_stop
    say "stopped in $(( ($(now_ms) - t0) ))ms"
}

status_line() {
    local name=$1 addr=$2 pid=$3 state
    if [ -n "$pid" ]; then state=running; else state=stopped; pid=-; fi
    printf '%-14s %-44s %-8s %s\n' "$name" "$addr" "$pid" "$state"
}

cmd_status() {
    local n
    status_line redis "127.0.0.1:$REDIS_PORT" "$(redis_pid)"
    for ((n = 0; n < CLUSTER_NODES; n++)); do
        if [ "$REDIS_MODE" = cluster ] || [ -n "$(cnode_pid $n)" ]; then
            status_line "redis-$(cnode_port $n)" "127.0.0.1:$(cnode_port $n) (cluster)" "$(cnode_pid $n)"
        fi
    done
    status_line mysql-primary "127.0.0.1:$MYSQL_PRIMARY_PORT" "$(mysql_pid primary)"
    status_line mysql-replica "127.0.0.1:$MYSQL_REPLICA_PORT" "$(mysql_pid replica)"
    status_line kafka "127.0.0.1:$KAFKA_PORT" "$(kafka_pid)"
    for n in a b; do
        status_line "relay-$n" "127.0.0.1:$(relay_port $n) ${RUN#$top/}/relay-$n/relay.sock" \
            "$(live_pid "$RUN/relay-$n/relay.pid" "$RUN/relay-$n/relay-worker.conf")"
    done
    status_line consumer "-" "$(live_pid "$RUN/consumer/consumer.pid" "$RUN/consumer/roomlist-consumer.conf")"
    for n in a b; do
        status_line "nginx-$n" "$SCHEME://127.0.0.1:$(nginx_port $n)" "$(nginx_pid $n)"
    done
}

cmd_banner() {
    # what the examples need to trust the dev CA in TLS mode
    local py_ssl="" curl_ca="" tls_line=""
    if [ "$TLS" = 1 ]; then
        py_ssl=", ssl=ssl.create_default_context(cafile=\"$TLS_DIR/ca.crt\")"
        curl_ca="--cacert $TLS_DIR/ca.crt "
        tls_line="  TLS         wss:// and https:// only (HTTP/2 by ALPN); certificate of the dev CA $TLS_DIR/ca.crt
              (browsers: import it as an authority, or accept the warning once per port)
"
    fi
    cat <<EOF

MiniChat dev stack (127.0.0.1 only; data in ${RUN#$top/}/, kept across restarts)

  WebSocket   $WS_SCHEME://127.0.0.1:$NGINX_A_PORT/ws   (node a)
              $WS_SCHEME://127.0.0.1:$NGINX_B_PORT/ws   (node b)
              subprotocol minichat.v1, JWT in ?token= or "Authorization: Bearer"
  Web client  $SCHEME://127.0.0.1:$NGINX_A_PORT/   (node a)
              $SCHEME://127.0.0.1:$NGINX_B_PORT/   (node b)
              demo users 1..6 (Alice, Bob, ...); one browser tab per user
${tls_line}  Token       make token USER=42

  Python client (python3-websockets; room 1 must exist and have user 42 as a member):
    /usr/bin/python3 - <<'PY'
import asyncio, json, ssl, subprocess, websockets
async def main():
    tok = subprocess.check_output(["$BIN/minichat-token", "--secret-file", "$SECRET_FILE", "42"],
                                  text=True).strip()
    async with websockets.connect("$WS_SCHEME://127.0.0.1:$NGINX_A_PORT/ws?token=" + tok,
                                  subprotocols=["minichat.v1"]$py_ssl) as ws:
        print(await ws.recv())      # {"op":"hello",...}
        await ws.send(json.dumps({"op": "send", "id": 1, "room": 1, "cid": "c1", "body": "hi"}))
        print(await ws.recv())      # {"op":"ack",...} or {"op":"error",...}
asyncio.run(main())
PY

  REST:
    curl -sS ${curl_ca}-X POST $SCHEME://127.0.0.1:$NGINX_A_PORT/api/rooms \\
         -H "Authorization: Bearer \$(make -s -C $top token USER=42)" -H 'Content-Type: application/json' \\
         -d '{"kind":"group","title":"t","members":[42,43]}'      # -> 201 {"id":N}

  MySQL       mariadb -h127.0.0.1 -P$MYSQL_PRIMARY_PORT -uroot minichat   (primary; root has no password)
              mariadb -h127.0.0.1 -P$MYSQL_REPLICA_PORT -uroot minichat   (replica, read-only)
  Redis       $(if [ "$REDIS_MODE" = cluster ]; then echo "redis-cli -c -p $CLUSTER_PORT   (cluster of $CLUSTER_NODES nodes from $CLUSTER_PORT)"; else echo "redis-cli -p $REDIS_PORT"; fi)
  Kafka       127.0.0.1:$KAFKA_PORT, topics $KAFKA_TOPIC and $KAFKA_PUSH_TOPIC (offline push, docs/push.md; TLS on $KAFKA_SSL_PORT, SASL over TLS on $KAFKA_SASL_PORT)
  Backend TLS the services reach Kafka and MySQL $(tls_pick "over TLS (user $MYSQL_SVC_USER, verify)" "in plaintext (TLS=1: over TLS)");
              CA, certificates and passwords in ${BACKEND_DIR#$top/}/ (docs/operations-security.md)
  Logs        ${RUN#$top/}/*/ (nginx-a/error.log, relay-a/relay.log, kafka/server.log, ...)

  make status | make stop          (bash scripts/stack.sh reset wipes all data)
EOF
}

cmd_reset() {
    cmd_stop
    rm -rf "$RUN"
    say "removed $RUN"
}

case "${1:-}" in
    start)  cmd_start ;;
    stop)   cmd_stop ;;
    status) cmd_status ;;
    banner) cmd_banner ;;
    reset)  cmd_reset ;;
    restart) cmd_stop; cmd_start ;;
    *) echo "usage: $0 start|stop|status|banner|reset|restart" >&2; exit 2 ;;
esac; exit $?
