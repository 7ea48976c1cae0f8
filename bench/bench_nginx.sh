# bench_nginx.sh: sourced by bench.sh and the A/B scripts beside it.
#
# bench_nginx_conf SRC BD PORT: prints the configuration of a bench nginx
# made from a stack node's SRC (its nginx.conf): pid and error log in BD,
# no access log, no minichat_limit_* lines (the bench measures the path, not
# the limits), listening on PORT.
bench_nginx_conf() {
    sed -e "s|^pid .*|pid $2/nginx.pid;|" -e "s|^error_log .*|error_log $2/error.log notice;|" \
        -e "s|access_log .*|access_log off;|" -e '/minichat_limit_/d' \
        -e "s|^\( *\)listen 127.0.0.1:[0-9]*;|\1listen 127.0.0.1:$3;|" "$1"
}

# bench_nginx_up BD PORT RUN: node a's bench nginx (RUN's nginx-a) in BD on
# PORT, unless one runs there already; bench_nginx_started is 1 when this
# call started it (the caller then stops it).  Returns non-zero when it
# cannot start.
bench_nginx_up() {
    bench_nginx_started=0
    if [ -s "$1/nginx.pid" ] && kill -0 "$(cat "$1/nginx.pid")" 2>/dev/null; then
        return 0
    fi
    mkdir -p "$1"
    bench_nginx_conf "$3/nginx-a/nginx.conf" "$1" "$2" > "$1/nginx.conf" || return 1
    /usr/sbin/nginx -p "$1" -c "$1/nginx.conf" -e "$1/error.log" || return 1
    bench_nginx_started=1
    sleep 1
}

# bench_nginx_down BD: stops BD's bench nginx gracefully and waits (up to
# 10 s) until it has exited, so that a bench started right after does not
# take a quitting nginx for a running one.
bench_nginx_down() {
    local pid
    pid=$(cat "$1/nginx.pid" 2>/dev/null) || return 0
    kill -QUIT "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
}
