/*
 * libFuzzer target: the length-prefixed framing of the unix socket between
 * nginx workers and the relay-worker (lib/src/frame.c), read as both ends
 * read it: bytes arrive in arbitrary pieces, every complete frame's payload
 * is unpacked as a minichat.LocalFrame, an announced length above the
 * maximum closes the link before its payload is buffered.
 *
 * Checks: a frame the parser accepts lies inside the bytes it was given;
 * mc_frame_put_header() writes a header that parses back to its length; a
 * payload that unpacks packs again to as many bytes as protobuf-c said, and
 * those bytes, when they unpack, pack to the same bytes again (protobuf-c's
 * canonical form is a fixed point).  They need not unpack: protobuf-c 1.4
 * keeps a tag of field number 0 written in a long varint ("80 00") as an
 * unknown field and writes it back in a form it then refuses (found by this
 * target, fuzz/corpus/fuzz_frame/found-protobuf-field0).  These bytes only
 * come from MiniChat's own processes, which never write such a tag; were a
 * peer relay-worker to send one inside a ChatMessage, the repacked frame
 * would be skipped as malformed by the module, nothing worse.
 *
 * Input: 4 bytes for the cuts (chunks.h), 1 byte for the maximum payload
 * (0 to 4080 bytes, so that the fuzzer reaches it), then the stream.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chunks.h"
#include "minichat.pb-c.h"
#include "minichat/frame.h"

static void check_payload(const uint8_t *p, size_t n)
{
    Minichat__LocalFrame *f, *g;
    uint8_t *a, *b;
    size_t an, bn;

    f = minichat__local_frame__unpack(NULL, n, p);
    if (f == NULL) {
        return; /* malformed: the module logs and skips it */
    }
    an = minichat__local_frame__get_packed_size(f);
    a = malloc(an + 1);
    if (a == NULL || minichat__local_frame__pack(f, a) != an) {
        abort();
    }
    g = minichat__local_frame__unpack(NULL, an, a);
    if (g == NULL) {
        minichat__local_frame__free_unpacked(f, NULL);
        free(a);
        return;
    }
    bn = minichat__local_frame__get_packed_size(g);
    b = malloc(bn + 1);
    if (b == NULL || minichat__local_frame__pack(g, b) != bn || bn != an || memcmp(a, b, an) != 0) {
        abort();
    }
    minichat__local_frame__free_unpacked(f, NULL);
    minichat__local_frame__free_unpacked(g, NULL);
    free(a);
    free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t hdr[MC_FRAME_HDR], *in;
    size_t max, cap, in_len = 0, off, len, n;
    fuzz_chunks_t cuts;
    int rc, closed = 0;

    fuzz_chunks_init(&cuts, &data, &size);
    if (size == 0) {
        return 0;
    }
    max = (size_t)data[0] * 16;
    data++;
    size--;

    mc_frame_put_header(hdr, (uint32_t)max);
    if (mc_frame_parse(hdr, MC_FRAME_HDR, MC_FRAME_MAX, &len) != (max ? MC_FRAME_AGAIN : MC_FRAME_OK)) {
        abort();
    }

    cap = max + MC_FRAME_HDR;
    in = malloc(cap);
    if (in == NULL) {
        abort();
    }
    while (size > 0 && !closed) {
        n = fuzz_chunks_next(&cuts, size);
        if (n > cap - in_len) {
            n = cap - in_len;
        }
        if (n == 0) {
            abort(); /* a full buffer always starts with a complete frame */
        }
        memcpy(in + in_len, data, n);
        in_len += n;
        data += n;
        size -= n;

        off = 0;
        for (;;) {
            rc = mc_frame_parse(in + off, in_len - off, max, &len);
            if (rc == MC_FRAME_AGAIN) {
                break;
            }
            if (rc == MC_FRAME_TOO_LARGE) {
                closed = 1;
                break;
            }
            if (rc != MC_FRAME_OK || len > max || MC_FRAME_HDR + len > in_len - off) {
                abort();
            }
            check_payload(in + off + MC_FRAME_HDR, len);
            off += MC_FRAME_HDR + len;
        }
        memmove(in, in + off, in_len - off);
        in_len -= off;
    }
    free(in);
    return 0;
}
