/*
 * relay-forge: a gRPC caller that is not a relay-worker, for the tests of the
 * mesh's mutual TLS (tests/integration/test_peer_tls.py).  It makes one
 * /minichat.Relay/Deliver call carrying a RelayBatch of one chat message and
 * prints how it ended; with --stream, a /minichat.Relay/Stream call carrying
 * that one batch, then closed from this side (the ack it gets, if any,
 * prints as "accepted N": its count of batches).
 *
 *   relay-forge --target HOST:PORT --from NODE --room R --seq S
 *               [--recipient USER]... [--sender USER] [--body TEXT]
 *               [--ca FILE [--cert FILE --key FILE] [--name NAME]]
 *               [--timeout-ms MS] [--stream]
 *
 * Without --ca the call is plain (insecure credentials); with --ca alone it
 * is TLS without a client certificate; with --cert and --key it presents
 * that certificate.  --name is the name the server's certificate must carry
 * (default: the host of --target).
 *
 * Prints "status N DETAILS" (and "accepted N" when the call succeeded).
 * Exit status: 0 when the call ended OK, 1 when it ended with another
 * status, 2 on bad arguments or a local failure.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "minichat.pb-c.h"
#include "minichat/decimal.h"

#define FORGE_RECIPIENTS_MAX 16
#define FORGE_PEM_MAX (1 << 20)

typedef struct {
    const char *target, *from, *body, *ca, *cert, *key, *name;
    uint64_t room, seq, sender, timeout_ms;
    int stream;              /* --stream: /minichat.Relay/Stream instead of Deliver */
    uint64_t recipients[FORGE_RECIPIENTS_MAX];
    size_t n_recipients;
} forge_args_t;

static void usage(void)
{
    fprintf(stderr, "usage: relay-forge --target HOST:PORT --from NODE --room R --seq S [--recipient USER]...\n"
                    "                   [--sender USER] [--body TEXT] [--ca FILE [--cert FILE --key FILE]\n"
                    "                   [--name NAME]] [--timeout-ms MS] [--stream]\n");
}

/* Returns the file's contents (NUL-terminated, malloc'ed) or NULL. */
static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *s;
    size_t n;

    if (f == NULL) {
        perror(path);
        return NULL;
    }
    s = malloc(FORGE_PEM_MAX + 1);
    n = s ? fread(s, 1, FORGE_PEM_MAX, f) : 0;
    fclose(f);
    if (s == NULL || n == 0) {
        fprintf(stderr, "%s: empty or unreadable\n", path);
        free(s);
        return NULL;
    }
    s[n] = '\0';
    return s;
}

/* Parses a decimal option value; exits 2 when it is not one. */
static uint64_t num(const char *opt, const char *v)
{
    uint64_t x;

    if (mc_parse_u64(v, strlen(v), &x) != 0) {
        fprintf(stderr, "relay-forge: %s wants a number, not \"%s\"\n", opt, v);
        exit(2);
    }
    return x;
}

static int parse_args(int argc, char **argv, forge_args_t *a)
{
    static const struct option opts[] = {
        {"target", required_argument, NULL, 't'}, {"from", required_argument, NULL, 'f'},
        {"room", required_argument, NULL, 'r'},   {"seq", required_argument, NULL, 's'},
        {"recipient", required_argument, NULL, 'u'}, {"sender", required_argument, NULL, 'S'},
        {"body", required_argument, NULL, 'b'},   {"ca", required_argument, NULL, 'c'},
        {"cert", required_argument, NULL, 'C'},   {"key", required_argument, NULL, 'k'},
        {"name", required_argument, NULL, 'n'},   {"timeout-ms", required_argument, NULL, 'T'},
        {"stream", no_argument, NULL, 'x'},       {NULL, 0, NULL, 0}};
    int c;

    memset(a, 0, sizeof(*a));
    a->body = "forged";
    a->sender = 1;
    a->timeout_ms = 5000;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 't': a->target = optarg; break;
        case 'f': a->from = optarg; break;
        case 'r': a->room = num("--room", optarg); break;
        case 's': a->seq = num("--seq", optarg); break;
        case 'S': a->sender = num("--sender", optarg); break;
        case 'b': a->body = optarg; break;
        case 'c': a->ca = optarg; break;
        case 'C': a->cert = optarg; break;
        case 'k': a->key = optarg; break;
        case 'n': a->name = optarg; break;
        case 'T': a->timeout_ms = num("--timeout-ms", optarg); break;
        case 'x': a->stream = 1; break;
        case 'u':
            if (a->n_recipients == FORGE_RECIPIENTS_MAX) {
                fprintf(stderr, "relay-forge: at most %d recipients\n", FORGE_RECIPIENTS_MAX);
                return -1;
            }
            a->recipients[a->n_recipients++] = num("--recipient", optarg);
            break;
        default: return -1;
        }
    }
    if (optind != argc || a->target == NULL || a->from == NULL || a->room == 0 || a->seq == 0
        || (a->cert == NULL) != (a->key == NULL) || ((a->cert || a->name) && a->ca == NULL)
        || a->timeout_ms == 0 || a->timeout_ms > 600000) {
        return -1;
    }
    return 0;
}

/* Returns the channel's credentials for the arguments, or NULL. */
static grpc_channel_credentials *creds_for(const forge_args_t *a)
{
    grpc_ssl_pem_key_cert_pair pair;
    grpc_channel_credentials *cr = NULL;
    char *ca = NULL, *cert = NULL, *key = NULL;

    if (a->ca == NULL) {
        return grpc_insecure_credentials_create();
    }
    if ((ca = read_file(a->ca)) == NULL) {
        return NULL;
    }
    if (a->cert == NULL) {
        cr = grpc_ssl_credentials_create(ca, NULL, NULL, NULL);
    } else if ((cert = read_file(a->cert)) != NULL && (key = read_file(a->key)) != NULL) {
        pair.private_key = key;
        pair.cert_chain = cert;
        cr = grpc_ssl_credentials_create(ca, &pair, NULL, NULL);
    }
    /* the credentials keep their own copies */
    free(ca);
    free(cert);
    free(key);
    return cr;
}

/* Packs the batch into a byte buffer; NULL when out of memory. */
static grpc_byte_buffer *batch_for(const forge_args_t *a)
{
    Minichat__RelayBatch b = MINICHAT__RELAY_BATCH__INIT;
    Minichat__ChatMessage m = MINICHAT__CHAT_MESSAGE__INIT, *mp = &m;
    grpc_byte_buffer *bb;
    grpc_slice s;
    uint8_t *buf;
    size_t len;

    m.room = a->room;
    m.seq = a->seq;
    m.sender = a->sender;
    m.cid = "forged-cid";
    m.body = (char *)a->body;
    m.ts = 1;
    m.recipients = (uint64_t *)a->recipients;
    m.n_recipients = a->n_recipients;
    m.origin_node = (char *)a->from;
    b.from_node = (char *)a->from;
    b.messages = &mp;
    b.n_messages = 1;
    len = minichat__relay_batch__get_packed_size(&b);
    buf = malloc(len ? len : 1);
    if (buf == NULL) {
        return NULL;
    }
    minichat__relay_batch__pack(&b, buf);
    s = grpc_slice_new(buf, len, free);
    bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

/* Prints the RelayAck's accepted count. */
static void print_ack(grpc_byte_buffer *bb)
{
    grpc_byte_buffer_reader r;
    grpc_slice s;
    Minichat__RelayAck *ack;

    if (bb == NULL || !grpc_byte_buffer_reader_init(&r, bb)) {
        return;
    }
    s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    ack = minichat__relay_ack__unpack(NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    if (ack) {
        printf("accepted %u\n", ack->accepted);
        minichat__relay_ack__free_unpacked(ack, NULL);
    }
    grpc_slice_unref(s);
}

int main(int argc, char **argv)
{
    forge_args_t a;
    grpc_channel_credentials *cr;
    grpc_channel *ch;
    grpc_completion_queue *cq;
    grpc_call *call;
    grpc_byte_buffer *send_bb, *recv_bb = NULL;
    grpc_metadata_array md_init, md_trail;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op ops[6], *op = ops;
    grpc_arg arg;
    grpc_channel_args cargs = {0, &arg};
    grpc_event ev;
    gpr_timespec deadline;
    char *d;
    int rc;

    if (parse_args(argc, argv, &a) != 0) {
        usage();
        return 2;
    }
    grpc_init();
    cr = creds_for(&a);
    send_bb = batch_for(&a);
    if (cr == NULL || send_bb == NULL) {
        fprintf(stderr, "relay-forge: cannot set up the call\n");
        return 2;
    }
    if (a.name) {
        arg.type = GRPC_ARG_STRING;
        arg.key = GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
        arg.value.string = (char *)a.name;
        cargs.num_args = 1;
    }
    ch = grpc_channel_create(a.target, cr, &cargs);
    grpc_channel_credentials_release(cr);
    cq = grpc_completion_queue_create_for_next(NULL);
    deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis((int64_t)a.timeout_ms, GPR_TIMESPAN));
    call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, grpc_slice_from_static_string(
                                    a.stream ? "/minichat.Relay/Stream" : "/minichat.Relay/Deliver"), NULL, deadline,
                                    NULL);
    grpc_metadata_array_init(&md_init);
    grpc_metadata_array_init(&md_trail);
    memset(ops, 0, sizeof(ops));
    op->op = GRPC_OP_SEND_INITIAL_METADATA;
    op++;
    op->op = GRPC_OP_SEND_MESSAGE;
    op->data.send_message.send_message = send_bb;
    op++;
    op->op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    op++;
    op->op = GRPC_OP_RECV_INITIAL_METADATA;
    op->data.recv_initial_metadata.recv_initial_metadata = &md_init;
    op++;
    op->op = GRPC_OP_RECV_MESSAGE;
    op->data.recv_message.recv_message = &recv_bb;
    op++;
    op->op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op->data.recv_status_on_client.trailing_metadata = &md_trail;
    op->data.recv_status_on_client.status = &status;
    op->data.recv_status_on_client.status_details = &details;
    op++;
    if (call == NULL || grpc_call_start_batch(call, ops, (size_t)(op - ops), &a, NULL) != GRPC_CALL_OK) {
        fprintf(stderr, "relay-forge: cannot start the call\n");
        return 2;
    }
    ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    rc = ev.type == GRPC_OP_COMPLETE && ev.success && status == GRPC_STATUS_OK ? 0 : 1;
    d = grpc_slice_to_c_string(details);
    printf("status %d %s\n", (int)status, d ? d : "");
    gpr_free(d);
    if (rc == 0) {
        print_ack(recv_bb);
    }
    if (recv_bb) {
        grpc_byte_buffer_destroy(recv_bb);
    }
    grpc_byte_buffer_destroy(send_bb);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&md_init);
    grpc_metadata_array_destroy(&md_trail);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(cq);
    grpc_channel_destroy(ch);
    grpc_shutdown();
    return rc;
}
