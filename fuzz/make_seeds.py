#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/corpus/<target>/.

Seeds are small, hand-chosen inputs that reach each target's interesting
paths at once (valid frames, fragments, close frames, signed tokens, ops);
the fuzzer mutates from there.  Run it again after changing a target's input
layout: `python3 fuzz/make_seeds.py`.  Files the fuzzer found and that were
added by hand (named crash-* or found-*) are left alone.
"""
import base64
import hashlib
import hmac
import json
import os
import struct

TOP = os.path.dirname(os.path.abspath(__file__))
CUTS = [b"\x00\x00\x00\x00", b"\x01\x02\x03\x04", b"\xff\x10\x20\x30"]


def client_frame(opcode, payload, fin=True, mask=b"\x37\xfa\x21\x3d", rsv=0):
    b0 = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    if n < 126:
        hdr = bytes([b0, 0x80 | n])
    elif n <= 0xFFFF:
        hdr = bytes([b0, 0x80 | 126]) + struct.pack(">H", n)
    else:
        hdr = bytes([b0, 0x80 | 127]) + struct.pack(">Q", n)
    body = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
    return hdr + mask + body


def ws_seeds():
    op = json.dumps({"op": "send", "id": 1, "room": 12, "cid": "c1", "body": "hi"}).encode()
    hangul = "안녕하세요 😀".encode()
    return {
        "text": client_frame(1, op),
        "ping_pong": client_frame(9, b"ping") + client_frame(10, b""),
        "fragments": client_frame(1, hangul[:4], fin=False) + client_frame(9, b"p")
        + client_frame(0, hangul[4:9], fin=False) + client_frame(0, hangul[9:]),
        "bad_utf8_fragment": client_frame(1, b"ab\xc3", fin=False) + client_frame(0, b"\x28"),
        "close": client_frame(8, struct.pack(">H", 1000) + "bye é".encode()),
        "close_bad_code": client_frame(8, struct.pack(">H", 1005)),
        "len16": client_frame(2, bytes(range(256)) * 2),
        "too_big_len64": bytes([0x82, 0xFF]) + struct.pack(">Q", 1 << 40) + b"\x00\x00\x00\x00",
        "unmasked": bytes([0x81, 0x02]) + b"hi",
        "rsv": client_frame(1, b"x", rsv=0x40),
        "cont_first": client_frame(0, b"x"),
    }


def utf8_seeds():
    return {
        "ascii": b"hello, world " * 3,
        "mixed": "aé中😀 ünïcödé".encode(),
        "surrogate": b"ab\xed\xa0\x80cd",
        "overlong": b"\xc0\xaf\xe0\x80\xaf\xf0\x8f\xbf\xbf",
        "truncated": "中".encode()[:2],
        "max": b"\xf4\x8f\xbf\xbf\xf4\x90\x80\x80",
    }


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=")


def jwt_seeds():
    secret = b"fuzz-secret-0123456789"
    hdr = b'{"alg":"HS256","typ":"JWT"}'
    pl = b'{"sub":"42","exp":1800000000}'
    signing = b64u(hdr) + b"." + b64u(pl)
    sig = b64u(hmac.new(secret, signing, hashlib.sha256).digest())
    return {
        "raw_valid": b"\x00" + signing + b"." + sig,
        "raw_none": b"\x00" + b64u(b'{"alg":"none"}') + b"." + b64u(pl) + b".",
        "raw_dots": b"\x00a.b.c.d",
        "json_good": b"\x01" + hdr + b"\n" + pl,
        "json_int_sub": b"\x01" + hdr + b'\n{"sub":7,"nbf":1}',
        "json_bad_exp": b"\x01" + hdr + b'\n{"sub":"1","exp":"soon"}',
        "json_alg_none": b"\x01" + b'{"alg":"none"}\n{"sub":"1"}',
        "sign": b"\x02" + struct.pack(">Qq", 42, 1800000000),
        "sign_big_sub": b"\x02" + struct.pack(">Qq", (1 << 64) - 1, 0),
    }


def frame_seeds():
    def lf(payload):
        return struct.pack(">I", len(payload)) + payload
    # field 1 (a length-delimited body) holding a few bytes; a varint; junk
    return {
        "two_frames": b"\xff" + lf(b"\x0a\x04\x08\x01\x10\x02") + lf(b""),
        "varint": b"\x10" + lf(b"\x08\x96\x01"),
        "junk": b"\x08" + lf(b"\xff\xff\xff\xff\xff"),
        "too_large": b"\x01" + struct.pack(">I", 1 << 20) + b"abc",
    }


def http_seeds():
    # what a scraper, a probe and a confused client send to http_listen
    return {
        "metrics": b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:17061\r\nAccept: */*\r\n\r\n",
        "ready_10": b"GET /ready?x=1 HTTP/1.0\n\n",
        "post_body": b"POST /status HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd",
        "chunked": b"GET /status HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "folded": b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n",
        "tls_hello": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(32)) + b"\r\n\r\n",
        "long_header": b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 4200 + b"\r\n\r\n",
        "http2": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    }


def op_seeds():
    ops = [
        {"op": "send", "id": 7, "room": 12, "cid": "client-unique", "body": "hi"},
        {"op": "read", "room": 12, "seq": 101},
        {"op": "typing", "room": 12},
        {"op": "history", "id": 8, "room": 12, "before": 101, "limit": 50},
        {"op": "rooms", "id": 9, "limit": 20, "cursor": "0000018c2f1a2b3c000000000000000c"},
        {"op": "resume", "rooms": {"12": 100, "13": {"seq": 4, "epoch": "abc"}}},
        {"op": "send", "room": -1, "cid": "", "body": 5},
        {"op": "nope", "id": "x"},
    ]
    seeds = {"op%d" % i: json.dumps(o).encode() for i, o in enumerate(ops)}
    seeds["not_object"] = b"[1,2,3]"
    seeds["dup_key"] = b'{"op":"read","op":"send"}'
    seeds["nul"] = b'{"op":"send","room":1,"cid":"a\\u0000","body":"x"}'
    return seeds


def text_seeds():
    # first byte picks the parser in fuzz_text.c
    return {
        "decimal": b"\x00" + b"18446744073709551615",
        "cursor": b"\x01" + b"0000018c2f1a2b3c000000000000000c",
        "readmark": b"\x02" + b"12:42\n101",
        "addr": b"\x03" + b"[::1]:7000",
        "redirect": b"\x04" + b"MOVED 3999 127.0.0.1:6381",
        "ask": b"\x04" + b"ASK 1 :7002",
        "errclass": b"\x05" + b"TRYAGAIN Multiple keys request during rehashing of slot",
        "info": b"\x06" + b"# Replication\r\nrole:master\r\nmaster_replid:" + b"a" * 40 + b"\r\n",
        "title": b"\x07" + "방 제목".encode(),
        "idem": b"\x08" + b"create-1",
        "members": b"\x09" + struct.pack("<4Q", 3, 1, 3, 2),
    }


def inflate_seeds():
    import zlib

    def raw(data, level=6, bits=15):
        c = zlib.compressobj(level, zlib.DEFLATED, -bits)
        out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
        return out[:-4] if out.endswith(b"\x00\x00\xff\xff") else out

    msg = json.dumps({"op": "send", "id": 1, "room": 12, "cid": "c1", "body": "hello " * 40}).encode()
    bomb = raw(b"\x00" * (1 << 20), 9)
    # byte 0: bits 9 + b % 7 (6: 15) and level 1 + b / 16 % 9; byte 1: the cut; bytes 2-3: max - 1
    return {
        "message": bytes([6 | 5 << 4, 40]) + struct.pack(">H", 4095) + raw(msg),
        "final_block": bytes([6, 10]) + struct.pack(">H", 4095) + zlib.compress(msg)[2:-4],
        "small_window": bytes([0 | 2 << 4, 7]) + struct.pack(">H", 1023) + raw(msg, 6, 9),
        "bomb": bytes([6 | 8 << 4, 3]) + struct.pack(">H", 65535) + bomb,
        "plain_text": bytes([6, 20]) + struct.pack(">H", 255) + "안녕 hello ".encode() * 8,
        "garbage": bytes([3, 1]) + struct.pack(">H", 100) + bytes(range(7, 200, 3)),
    }


def write(target, seeds):
    d = os.path.join(TOP, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for name in os.listdir(d):
        if not name.startswith(("crash-", "found-")):
            os.remove(os.path.join(d, name))
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


def main():
    write("fuzz_ws", {"%s_%d" % (n, i): c + b"\xff" + d
                      for n, d in ws_seeds().items() for i, c in enumerate(CUTS[:2])})
    write("fuzz_utf8", {"%s_%d" % (n, i): c + d
                        for n, d in utf8_seeds().items() for i, c in enumerate(CUTS)})
    write("fuzz_jwt", jwt_seeds())
    write("fuzz_frame", {"%s_%d" % (n, i): c + d
                         for n, d in frame_seeds().items() for i, c in enumerate(CUTS[:2])})
    if os.path.exists(os.path.join(TOP, "fuzz_op.c")):
        write("fuzz_op", op_seeds())
    if os.path.exists(os.path.join(TOP, "fuzz_text.c")):
        write("fuzz_text", text_seeds())
    write("fuzz_inflate", inflate_seeds())
    write("fuzz_http", {"%s_%d" % (n, i): c + d
                        for n, d in http_seeds().items() for i, c in enumerate(CUTS[:2])})


if __name__ == "__main__":
    main()
