/*
 * loadgen's parent process: reads the options, forks the runners
 * (runner.c), walks them through connect -> hold -> send -> stop, prints
 * progress and the result, and exits 0 only when every check held.  See
 * loadgen.h for the design and usage() for the options.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "minichat/clock.h"

#include "loadgen.h"

static volatile sig_atomic_t interrupted;

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen idle|deliver --port P --secret-file F [options]\n"
            "  --host A              server address (127.0.0.1)\n"
            "  --sender-host A       deliver: the senders' server address (--host)\n"
            "  --sender-port P       deliver: the senders' server port (--port): another node\n"
            "  --path P              WebSocket path (/ws; centrifugo: /connection/websocket)\n"
            "  --proto NAME          protocol: minichat (default) or centrifugo\n"
            "  --conns N             idle: connections; deliver: receiving members (1000)\n"
            "  --procs P             runner processes, each under %d connections (as needed)\n"
            "  --src-addrs A         source addresses 127.0.0.2 .. 127.0.0.(A+1) (one per 20000)\n"
            "  --connect-rate R      new connections per second, all runners (2000; 0 = unpaced)\n"
            "  --inflight N          handshakes in flight per runner (256)\n"
            "  --handshake-timeout S (15)   --retries N (20)   --connect-timeout S (600)\n"
            "  --hold S              seconds to hold every connection once all are open (0)\n"
            "  --min-pings N         each open connection must have answered N pings (0)\n"
            "  --room-size S         deliver: members per room, 1..%d (100)\n"
            "  --messages K          deliver: messages per room (10)\n"
            "  --msg-rate R          deliver: messages per second per room, rooms staggered (10)\n"
            "  --wait S              deliver: seconds after the last send for the deliveries (15)\n"
            "  --user-base U         first user id (random)\n"
            "  --ready-file F        written (\"open N\") once every connection is open, or at the\n"
            "                        connect timeout with those that are (the run then FAILs)\n"
            "  --progress S          seconds between progress lines (1)\n",
            LG_MAX_CONNS_PER_PROC, LG_MAX_ROOM_SIZE);
}

/* Parses the value of option name as a number in [min, max].  Exits with a
 * message when it is not one. */
static double num(const char *name, const char *s, double min, double max)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v >= min && v <= max)) {
        fprintf(stderr, "loadgen: %s must be a number from %g to %g, got \"%s\"\n", name, min, max, s);
        exit(2);
    }
    return v;
}

static int read_secret(const char *path, lg_config_t *cfg)
{
    FILE *f = fopen(path, "r");
    size_t n;

    if (f == NULL) {
        fprintf(stderr, "loadgen: %s: %s\n", path, strerror(errno));
        return -1;
    }
    n = fread(cfg->secret, 1, sizeof(cfg->secret), f);
    fclose(f);
    while (n > 0 && (cfg->secret[n - 1] == '\n' || cfg->secret[n - 1] == '\r' || cfg->secret[n - 1] == ' ')) {
        n--;
    }
    if (n == 0 || n == sizeof(cfg->secret)) {
        fprintf(stderr, "loadgen: \"%s\" must hold a secret of 1..1023 bytes\n", path);
        return -1;
    }
    cfg->secret_len = n;
    return 0;
}

static void parse_args(int argc, char **argv, lg_config_t *cfg)
{
    const char *secret_file = NULL, *host = "127.0.0.1", *sender_host = NULL, *a, *v;
    int i, procs = 0, src = 0, total;

    memset(cfg, 0, sizeof(*cfg));
    cfg->proto = &lg_proto_minichat;
    cfg->conns = 1000;
    cfg->connect_rate = 2000;
    cfg->inflight = 256;
    cfg->handshake_timeout = 15;
    cfg->retries = 20;
    cfg->connect_timeout = 600;
    cfg->room_size = 100;
    cfg->messages = 10;
    cfg->msg_rate = 10;
    cfg->wait = 15;
    cfg->progress = 1;
    srand((unsigned)(time(NULL) ^ getpid()));
    /* fresh users each run (the stack keeps its data): 3e9 and up, apart
     * from the integration tests' 1e6..1e9 */
    cfg->user_base = 3000000000ULL + (uint64_t)(rand() % 100000) * 1000000ULL;

    if (argc < 2 || (strcmp(argv[1], "idle") != 0 && strcmp(argv[1], "deliver") != 0)) {
        usage();
        exit(2);
    }
    cfg->mode = strcmp(argv[1], "idle") == 0 ? LG_MODE_IDLE : LG_MODE_DELIVER;
    for (i = 2; i < argc; i += 2) {
        a = argv[i];
        if (i + 1 >= argc) {
            fprintf(stderr, "loadgen: %s needs a value\n", a);
            exit(2);
        }
        v = argv[i + 1];
        if (strcmp(a, "--host") == 0) {
            host = v;
        } else if (strcmp(a, "--port") == 0) {
            cfg->port = (uint16_t)num(a, v, 1, 65535);
        } else if (strcmp(a, "--sender-host") == 0) {
            sender_host = v;
        } else if (strcmp(a, "--sender-port") == 0) {
            cfg->sender_port = (uint16_t)num(a, v, 1, 65535);
        } else if (strcmp(a, "--path") == 0) {
            cfg->path = v;
        } else if (strcmp(a, "--proto") == 0) {
            if (strcmp(v, "minichat") == 0) {
                cfg->proto = &lg_proto_minichat;
            } else if (strcmp(v, "centrifugo") == 0) {
                cfg->proto = &lg_proto_centrifugo;
            } else {
                fprintf(stderr, "loadgen: unknown protocol \"%s\" (known: minichat, centrifugo)\n", v);
                exit(2);
            }
        } else if (strcmp(a, "--secret-file") == 0) {
            secret_file = v;
        } else if (strcmp(a, "--conns") == 0) {
            cfg->conns = (int)num(a, v, 1, LG_MAX_PROCS * (double)LG_MAX_CONNS_PER_PROC);
        } else if (strcmp(a, "--procs") == 0) {
            procs = (int)num(a, v, 1, LG_MAX_PROCS);
        } else if (strcmp(a, "--src-addrs") == 0) {
            src = (int)num(a, v, 1, LG_MAX_SRC_ADDRS);
        } else if (strcmp(a, "--connect-rate") == 0) {
            cfg->connect_rate = num(a, v, 0, 1e7);
        } else if (strcmp(a, "--inflight") == 0) {
            cfg->inflight = (int)num(a, v, 1, 100000);
        } else if (strcmp(a, "--handshake-timeout") == 0) {
            cfg->handshake_timeout = num(a, v, 0.1, 3600);
        } else if (strcmp(a, "--retries") == 0) {
            cfg->retries = (int)num(a, v, 0, 1000);
        } else if (strcmp(a, "--connect-timeout") == 0) {
            cfg->connect_timeout = num(a, v, 1, 86400);
        } else if (strcmp(a, "--hold") == 0) {
            cfg->hold = num(a, v, 0, 86400);
        } else if (strcmp(a, "--min-pings") == 0) {
            cfg->min_pings = (int)num(a, v, 0, 60000);
        } else if (strcmp(a, "--room-size") == 0) {
            cfg->room_size = (int)num(a, v, 1, LG_MAX_ROOM_SIZE);
        } else if (strcmp(a, "--messages") == 0) {
            cfg->messages = (int)num(a, v, 1, 1000000);
        } else if (strcmp(a, "--msg-rate") == 0) {
            cfg->msg_rate = num(a, v, 0.01, 1e6);
        } else if (strcmp(a, "--wait") == 0) {
            cfg->wait = num(a, v, 0, 3600);
        } else if (strcmp(a, "--user-base") == 0) {
            cfg->user_base = (uint64_t)num(a, v, 1, 1e15);
        } else if (strcmp(a, "--ready-file") == 0) {
            cfg->ready_file = v;
        } else if (strcmp(a, "--progress") == 0) {
            cfg->progress = num(a, v, 0.1, 3600);
        } else {
            fprintf(stderr, "loadgen: unknown option \"%s\"\n", a);
            usage();
            exit(2);
        }
    }
    if (cfg->port == 0 || secret_file == NULL) {
        usage();
        exit(2);
    }
    if (cfg->path == NULL) {
        cfg->path = cfg->proto->path;
    }
    if (inet_pton(AF_INET, host, &cfg->dst) != 1) {
        fprintf(stderr, "loadgen: --host must be an IPv4 address, got \"%s\"\n", host);
        exit(2);
    }
    if ((sender_host || cfg->sender_port) && cfg->mode != LG_MODE_DELIVER) {
        fprintf(stderr, "loadgen: --sender-host and --sender-port are for deliver (idle has no senders)\n");
        exit(2);
    }
    cfg->sender_dst = cfg->dst;
    if (sender_host && inet_pton(AF_INET, sender_host, &cfg->sender_dst) != 1) {
        fprintf(stderr, "loadgen: --sender-host must be an IPv4 address, got \"%s\"\n", sender_host);
        exit(2);
    }
    if (cfg->sender_port == 0) {
        cfg->sender_port = cfg->port;
    }
    if (read_secret(secret_file, cfg) != 0) {
        exit(2);
    }
    total = lg_total_conns(cfg);
    cfg->procs = procs ? procs : (total + 14999) / 15000;
    cfg->src_addrs = src ? src : (total + 19999) / 20000;
    /* the rooms are shared out whole: the largest slice decides */
    if ((total + cfg->procs - 1) / cfg->procs + (cfg->mode == LG_MODE_DELIVER ? cfg->room_size + 1 : 0)
        > LG_MAX_CONNS_PER_PROC) {
        fprintf(stderr, "loadgen: %d connections need more than %d runners (at most %d connections each)\n", total,
                cfg->procs, LG_MAX_CONNS_PER_PROC);
        exit(2);
    }
    if ((double)total / cfg->src_addrs > 28000) {
        fprintf(stderr, "loadgen: %d connections need more than %d source addresses (~28000 ports each)\n", total,
                cfg->src_addrs);
        exit(2);
    }
}

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void sum(const lg_shared_t *sh, int procs, lg_stats_t *t)
{
    int i;

    memset(t, 0, sizeof(*t));
    t->min_pings = UINT64_MAX;
    t->phase = LG_PH_DONE;
    for (i = 0; i < procs; i++) {
        const lg_stats_t *s = &sh->st[i];

        if (s->phase < t->phase) {
            t->phase = s->phase;
        }
        t->target += s->target;
        t->open += s->open;
        t->opened += s->opened;
        t->failed += s->failed;
        t->closed += s->closed;
        t->retries += s->retries;
        t->pings += s->pings;
        t->rooms += s->rooms;
        t->sent += s->sent;
        t->late += s->late;
        t->acked += s->acked;
        t->expected += s->expected;
        t->received += s->received;
        t->out_of_order += s->out_of_order;
        t->errors += s->errors;
        t->pss_kb += s->pss_kb;
        if (s->first_send_us != 0 && (t->first_send_us == 0 || s->first_send_us < t->first_send_us)) {
            t->first_send_us = s->first_send_us;
        }
        if (s->last_rx_us > t->last_rx_us) {
            t->last_rx_us = s->last_rx_us;
        }
        if (s->target > 0 && s->min_pings < t->min_pings) {
            t->min_pings = s->min_pings;
        }
        lg_hist_merge(&t->latency, &s->latency);
        lg_hist_merge(&t->ack_latency, &s->ack_latency);
    }
    if (t->min_pings == UINT64_MAX) {
        t->min_pings = 0;
    }
}

static void progress(const lg_config_t *cfg, const lg_stats_t *t, double secs)
{
    printf("loadgen: %6.1fs open %" PRIu64 "/%" PRIu64 " failed %" PRIu64 " closed %" PRIu64 " retries %" PRIu64
           " pings %" PRIu64,
           secs, t->open, t->target, t->failed, t->closed, t->retries, t->pings);
    if (cfg->mode == LG_MODE_DELIVER) {
        printf(" | rooms %" PRIu64 " sent %" PRIu64 " acked %" PRIu64 " received %" PRIu64 "/%" PRIu64, t->rooms,
               t->sent, t->acked, t->received, t->expected);
    }
    printf("\n");
    fflush(stdout);
}

/* 1 when some runner's phase is below ph (or one failed: -1). */
static int waiting_for(const lg_shared_t *sh, int procs, int ph)
{
    int i;

    for (i = 0; i < procs; i++) {
        if (sh->st[i].phase == LG_PH_FAILED) {
            return -1;
        }
    }
    for (i = 0; i < procs; i++) {
        if (sh->st[i].phase < ph) {
            return 1;
        }
    }
    return 0;
}

static int report(const lg_config_t *cfg, const lg_stats_t *t, int timed_out)
{
    uint64_t want_msgs = cfg->mode == LG_MODE_DELIVER ? t->rooms * (uint64_t)cfg->messages : 0;
    int64_t span_us;
    int ok;

    printf("loadgen: result mode=%s conns=%" PRIu64 " open=%" PRIu64 " failed=%" PRIu64 " closed=%" PRIu64
           " retries=%" PRIu64 " pings=%" PRIu64 " min_pings=%" PRIu64 " errors=%" PRIu64 " procs=%d src_addrs=%d\n",
           cfg->mode == LG_MODE_IDLE ? "idle" : "deliver", t->target, t->open, t->failed, t->closed, t->retries,
           t->pings, t->min_pings, t->errors, cfg->procs, cfg->src_addrs);
    if (cfg->mode == LG_MODE_DELIVER) {
        printf("loadgen: deliver rooms=%" PRIu64 " room_size=%d messages=%d sent=%" PRIu64 " acked=%" PRIu64
               " expected=%" PRIu64 " received=%" PRIu64 " missing=%" PRIu64 " out_of_order=%" PRIu64
               " late_sends=%" PRIu64 "\n",
               t->rooms, cfg->room_size, cfg->messages, t->sent, t->acked, t->expected, t->received,
               t->expected - (t->received < t->expected ? t->received : t->expected), t->out_of_order, t->late);
        printf("loadgen: latency_us p50=%" PRIu64 " p99=%" PRIu64 " p99.9=%" PRIu64 " max=%" PRIu64 " n=%" PRIu64 "\n",
               lg_hist_quantile(&t->latency, 0.5), lg_hist_quantile(&t->latency, 0.99),
               lg_hist_quantile(&t->latency, 0.999), t->latency.max, t->latency.n);
        printf("loadgen: ack_us p50=%" PRIu64 " p99=%" PRIu64 " p99.9=%" PRIu64 " max=%" PRIu64 " n=%" PRIu64 "\n",
               lg_hist_quantile(&t->ack_latency, 0.5), lg_hist_quantile(&t->ack_latency, 0.99),
               lg_hist_quantile(&t->ack_latency, 0.999), t->ack_latency.max, t->ack_latency.n);
        /* deliveries over the time from the first send to the last
         * delivery: what the server kept up with (make bench's rate) */
        span_us = t->first_send_us && t->last_rx_us > t->first_send_us ? t->last_rx_us - t->first_send_us : 0;
        printf("loadgen: rate span_ms=%.1f deliveries_per_s=%.0f\n", (double)span_us / 1000,
               span_us ? (double)t->received * 1e6 / (double)span_us : 0.0);
    }
    printf("loadgen: memory loadgen_pss_kb=%" PRIu64 " per_conn_bytes=%" PRIu64 "\n", t->pss_kb,
           t->opened ? t->pss_kb * 1024 / t->opened : 0);
    ok = !timed_out && t->failed == 0 && t->closed == 0 && t->errors == 0 && t->open == t->target
         && t->min_pings >= (uint64_t)cfg->min_pings;
    if (cfg->mode == LG_MODE_DELIVER) {
        ok = ok && t->sent == want_msgs && t->acked == want_msgs && t->received == t->expected
             && t->out_of_order == 0;
    }
    printf("loadgen: %s\n", ok ? "PASS" : "FAIL");
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    enum { P_CONNECT, P_HOLD, P_SEND, P_STOP } p = P_CONNECT;
    pid_t pids[LG_MAX_PROCS];
    lg_config_t cfg;
    lg_shared_t *sh;
    lg_stats_t t;
    int64_t t0, now, next_progress, until = 0;
    int i, st, alive, timed_out = 0, w;
    FILE *f;

    parse_args(argc, argv, &cfg);
    sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) {
        perror("loadgen: mmap");
        return 1;
    }
    memset(sh, 0, sizeof(*sh));
    printf("loadgen: %s: %d connections (%d rooms) to %s:%u%s, %d runners, %d source addresses, users from %" PRIu64
           "\n",
           cfg.mode == LG_MODE_IDLE ? "idle" : "deliver", lg_total_conns(&cfg), lg_rooms(&cfg), inet_ntoa(cfg.dst),
           cfg.port, cfg.path, cfg.procs, cfg.src_addrs, cfg.user_base);
    if (cfg.sender_dst.s_addr != cfg.dst.s_addr || cfg.sender_port != cfg.port) {
        printf("loadgen: senders to %s:%u\n", inet_ntoa(cfg.sender_dst), cfg.sender_port);
    }
    fflush(stdout);

    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    for (i = 0; i < cfg.procs; i++) {
        pids[i] = fork();
        if (pids[i] < 0) {
            perror("loadgen: fork");
            __atomic_store_n(&sh->stop, 1, __ATOMIC_RELAXED);
            cfg.procs = i;
            break;
        }
        if (pids[i] == 0) {
            /* the parent speaks for the run: a Ctrl-C reaches it, and a
             * parent that dies takes its runners with it */
            signal(SIGINT, SIG_IGN);
            signal(SIGTERM, SIG_DFL);
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            _exit(lg_runner_run(&cfg, sh, i));
        }
    }

    t0 = mc_now_ms();
    next_progress = t0;
    alive = cfg.procs;
    while (alive > 0) {
        struct timespec ts = {0, 100 * 1000 * 1000};

        nanosleep(&ts, NULL);
        now = mc_now_ms();
        for (i = 0; i < cfg.procs; i++) {
            if (pids[i] > 0 && waitpid(pids[i], &st, WNOHANG) == pids[i]) {
                pids[i] = 0;
                alive--;
                if (p != P_STOP) {
                    fprintf(stderr, "loadgen: runner %d ended early (%s %d)\n", i,
                            WIFSIGNALED(st) ? "signal" : "status", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
                    timed_out = 1;
                    p = P_STOP;
                }
            }
        }
        if (interrupted && p != P_STOP) {
            fprintf(stderr, "loadgen: interrupted\n");
            timed_out = 1;
            p = P_STOP;
        }
        sum(sh, cfg.procs, &t);
        if (now >= next_progress) {
            progress(&cfg, &t, (double)(now - t0) / 1000);
            next_progress = now + (int64_t)(cfg.progress * 1000);
        }
        switch (p) {
        case P_CONNECT:
            w = waiting_for(sh, cfg.procs, LG_PH_CONNECTED);
            if (w > 0 && now - t0 > (int64_t)(cfg.connect_timeout * 1000)) {
                /* hold what opened all the same: its memory and pings are
                 * still worth measuring; the result says FAIL */
                fprintf(stderr, "loadgen: the connect phase timed out with %" PRIu64 " of %" PRIu64 " open\n", t.open,
                        t.target);
                timed_out = 1;
                w = 0;
            }
            if (w == 0) {
                printf("loadgen: connected: %" PRIu64 " open, %" PRIu64 " failed in %.1f s; holding %.0f s\n", t.open,
                       t.failed, (double)(now - t0) / 1000, cfg.hold);
                fflush(stdout);
                if (cfg.ready_file && (f = fopen(cfg.ready_file, "w")) != NULL) {
                    fprintf(f, "open %" PRIu64 "\n", t.open);
                    fclose(f);
                }
                until = now + (int64_t)(cfg.hold * 1000);
                p = P_HOLD;
            } else if (w < 0) {
                fprintf(stderr, "loadgen: a runner failed to set up\n");
                timed_out = 1;
                p = P_STOP;
            }
            break;
        case P_HOLD:
            if (now >= until) {
                if (cfg.mode == LG_MODE_DELIVER) {
                    __atomic_store_n(&sh->go_send, 1, __ATOMIC_RELAXED);
                    until = now + (int64_t)(((double)cfg.messages / cfg.msg_rate + cfg.wait + 5) * 1000);
                    p = P_SEND;
                } else {
                    p = P_STOP;
                }
            }
            break;
        case P_SEND:
            if (waiting_for(sh, cfg.procs, LG_PH_DONE) == 0) {
                p = P_STOP;
            } else if (now >= until) {
                fprintf(stderr, "loadgen: the deliveries did not finish in time\n");
                timed_out = 1;
                p = P_STOP;
            }
            break;
        case P_STOP:
            break;
        }
        if (p == P_STOP) {
            __atomic_store_n(&sh->stop, 1, __ATOMIC_RELAXED);
        }
    }
    sum(sh, cfg.procs, &t);
    progress(&cfg, &t, (double)(mc_now_ms() - t0) / 1000);
    return report(&cfg, &t, timed_out);
}
