#!/usr/bin/python3
"""MiniChat soak / load run against the running dev stack (NOT part of `make test`).

    /usr/bin/python3 tests/soak/soak.py --conns 1000 --rooms 100 --rate 1000 --duration 150
    /usr/bin/python3 tests/soak/soak.py --conns 1000 --rooms 100 --rate 0 --burst 20   # burst only

Users are spread over nginx nodes a and b; a fraction (--dual) of them hold a
second connection on the other node.  Every user is in one room; rooms are
split between --procs client processes (a room lives wholly in one process,
so every check is local to it).  Phase 1 sends at --rate messages/s in total
for --duration seconds (each connection at rate/conns, pipelined up to
--inflight unacked sends); phase 2 (--burst N) has every connection send N
messages at once.  Then it checks, like tests/integration/test_load.py:

- every send got exactly one reply, an ack; each room's seqs are 1..N, once;
- every connection received, per room, exactly the messages not sent on it,
  once each, in strictly increasing seq order, fields matching the ack;
- the MySQL primary and the replica converge to exactly those rows, and
  rooms.last_seq == N.

It reports throughput, ack latency and send->receive latency (cross-node and
same-node) percentiles, the RSS of nginx workers, relay-workers and the
consumer before and after, and new warn/error/alert lines in the stack's logs.
Exit status 1 when any check fails.
"""

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import multiprocessing as mp
import os
import random
import re
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OFF = int(os.environ.get("MINICHAT_PORT_OFFSET", "0"))
RUN = os.environ.get("MINICHAT_RUN", os.path.join(TOP, ".run"))
NGINX_PORTS = {"a": 8080 + OFF, "b": 8081 + OFF}
MYSQL_PORTS = {"primary": 13306 + OFF, "replica": 13307 + OFF}
SUBPROTOCOL = "minichat.v1"
OTHER = {"a": "b", "b": "a"}


# --- helpers -------------------------------------------------------------------

def secret():
    with open(os.path.join(TOP, "conf", "dev-jwt-secret"), "rb") as f:
        return f.read().rstrip(b"\r\n ")


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=")


def make_token(user, key):
    """An HS256 JWT like build/bin/minichat-token's (sub as a string, exp in a day)."""
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64(json.dumps({"sub": str(user), "exp": int(time.time()) + 86400}, separators=(",", ":")).encode())
    sig = b64(hmac.new(key, head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + sig).decode()


def create_room(creator, members, node, key):
    url = "http://127.0.0.1:%d/api/rooms" % NGINX_PORTS[node]
    data = json.dumps({"kind": "group", "title": "soak", "members": members}).encode()
    for attempt in range(5):
        req = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Authorization": "Bearer " + make_token(creator, key),
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read())["id"]
        except urllib.error.HTTPError as e:
            if e.code != 503 or attempt == 4:
                raise RuntimeError("POST /api/rooms: %d %s" % (e.code, e.read()[:200]))
            time.sleep(0.2)


def body_for(msg_cid, size):
    """The body is a function of the cid, so the MySQL check needs only the cid."""
    base = "%s ü€😀 " % msg_cid
    return base + "x" * max(0, size - len(base.encode()))


def pct(xs, p):
    if not xs:
        return float("nan")
    # xs is sorted
    return xs[min(len(xs) - 1, int(len(xs) * p / 100.0))]


def proc_rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def stack_rss():
    """{name: kB} for nginx workers, relay-workers and the consumer."""
    out = {}
    for node in ("a", "b"):
        master = read_pid(os.path.join(RUN, "nginx-" + node, "nginx.pid"))
        if master:
            kids = []
            try:
                for t in os.listdir("/proc/%d/task" % master):
                    with open("/proc/%d/task/%s/children" % (master, t)) as f:
                        kids += [int(x) for x in f.read().split()]
            except OSError:
                pass
            for k in sorted(kids):
                out["nginx-%s worker %d" % (node, k)] = proc_rss_kb(k)
        pid = read_pid(os.path.join(RUN, "relay-" + node, "relay.pid"))
        if pid:
            out["relay-%s %d" % (node, pid)] = proc_rss_kb(pid)
    pid = read_pid(os.path.join(RUN, "consumer", "consumer.pid"))
    if pid:
        out["consumer %d" % pid] = proc_rss_kb(pid)
    return out


LOGS = ["nginx-a/error.log", "nginx-b/error.log", "relay-a/relay.log", "relay-b/relay.log", "consumer/consumer.log"]
BAD_LINE = re.compile(r"\[(warn|error|crit|alert|emerg)\]| (warn|error|crit|alert|fatal):|Sanitizer|runtime error:")


def log_offsets():
    out = {}
    for name in LOGS:
        try:
            out[name] = os.path.getsize(os.path.join(RUN, name))
        except OSError:
            out[name] = 0
    return out


def new_log_lines(offsets):
    out = {}
    for name in LOGS:
        path = os.path.join(RUN, name)
        try:
            with open(path, "rb") as f:
                if os.path.getsize(path) < offsets[name]:
                    offsets[name] = 0          # rotated
                f.seek(offsets[name])
                text = f.read().decode(errors="replace")
        except OSError:
            continue
        bad = [l for l in text.splitlines() if BAD_LINE.search(l)]
        stats = [l for l in text.splitlines() if " stats: " in l]
        out[name] = (bad, stats)
    return out


# --- one client process ----------------------------------------------------------

class Conn:
    def __init__(self, ws, user, node, room, name, inflight, res):
        self.ws, self.user, self.node, self.room, self.name = ws, user, node, room, name
        self.sem = asyncio.Semaphore(inflight)
        self.res = res
        self.next_id = 0
        self.waiting = {}                 # id -> (future)
        self.msgs = []                    # (seq, from, cid, body, ts, recv perf_counter)
        self.sent = set()                 # seqs acked on this connection
        self.closed = None
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self):
        try:
            async for raw in self.ws:
                now = time.perf_counter()
                f = json.loads(raw)
                op = f.get("op")
                if op == "msg":
                    if f.get("room") != self.room:
                        self.res["problems"].append("%s: msg of another room %r" % (self.name, f))
                    else:
                        self.msgs.append((f["seq"], f["from"], f["cid"], f["body"], f["ts"], now))
                elif op in ("ack", "error") and "id" in f:
                    fut = self.waiting.pop(f["id"], None)
                    if fut is None:
                        self.res["problems"].append("%s: reply nobody awaits (duplicate?): %r" % (self.name, f))
                    else:
                        fut.set_result((f, now))
                else:
                    self.res["problems"].append("%s: unexpected frame %r" % (self.name, f))
        except Exception as e:  # noqa: BLE001 - closed or broken; reported
            self.closed = e

    async def send(self, msg_cid, body, sent_at, ack_timeout, phase):
        async with self.sem:
            self.next_id += 1
            rid = self.next_id
            fut = asyncio.get_running_loop().create_future()
            self.waiting[rid] = fut
            t0 = time.perf_counter()
            w0 = time.time() * 1000
            sent_at[msg_cid] = (t0, self, phase)
            try:
                await self.ws.send(json.dumps({"op": "send", "id": rid, "room": self.room,
                                               "cid": msg_cid, "body": body}))
                reply, t1 = await asyncio.wait_for(fut, ack_timeout)
            except asyncio.TimeoutError:
                self.res["stuck"].append("%s: no reply to id %d cid %s within %.0fs (closed: %r)"
                                         % (self.name, rid, msg_cid, ack_timeout, self.closed))
                return None
            except Exception as e:  # noqa: BLE001
                self.res["problems"].append("%s: send %s failed: %r" % (self.name, msg_cid, e))
                return None
        if reply.get("op") != "ack" or reply.get("cid") != msg_cid or reply.get("room") != self.room:
            self.res["errors"].append("%s: send %s answered %r" % (self.name, msg_cid, reply))
            return None
        self.res["lat"].setdefault((phase, "ack"), []).append(t1 - t0)
        # server ts (taken when the message is sequenced) splits the ack latency
        self.res["lat"].setdefault((phase, "ack: send->server ts"), []).append((reply["ts"] - w0) / 1000.0)
        self.res["lat"].setdefault((phase, "ack: server ts->ack"), []).append(
            (w0 + (t1 - t0) * 1000 - reply["ts"]) / 1000.0)
        self.sent.add(reply["seq"])
        return reply


def child_main(idx, args, rooms, key, barrier, out_q):
    """rooms: [(room_id, [(user, [nodes])...])]"""
    import websockets  # noqa: F401 - import in the child only

    res = {"problems": [], "errors": [], "stuck": [], "lat": {},
           "acks": 0, "sends": 0, "rooms": {}, "t_phase": {}}
    try:
        asyncio.run(child_async(idx, args, rooms, key, barrier, res))
    except Exception as e:  # noqa: BLE001
        import traceback
        res["problems"].append("process %d crashed: %s" % (idx, traceback.format_exc()))
        try:
            barrier.abort()
        except Exception:  # noqa: BLE001
            pass
    out_q.put((idx, res))


async def child_async(idx, args, rooms, key, barrier, res):
    import websockets
    loop = asyncio.get_running_loop()
    conns = []
    gate = asyncio.Semaphore(50)

    async def opener(user, node, room):
        async with gate:
            url = "ws://127.0.0.1:%d/ws?token=%s" % (NGINX_PORTS[node], make_token(user, key))
            for attempt in range(3):
                try:
                    ws = await websockets.connect(url, subprotocols=[SUBPROTOCOL], open_timeout=10,
                                                  close_timeout=2, max_size=2**22, max_queue=None,
                                                  ping_interval=None)
                    break
                except Exception as e:  # noqa: BLE001
                    if attempt == 2:
                        raise RuntimeError("connect user %d to %s: %r" % (user, node, e))
                    await asyncio.sleep(0.2)
            hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert hello.get("op") == "hello" and hello["node"] == node, hello
            conns.append(Conn(ws, user, node, room, "user %d on %s room %d" % (user, node, room),
                              args.inflight, res))

    await asyncio.gather(*(opener(u, n, r) for r, ms in rooms for u, ns in ms for n in ns))
    # every process starts sending at once
    await loop.run_in_executor(None, barrier.wait, 120)

    sent_at = {}                    # cid -> (perf_counter at send, conn)
    acked = {}                      # room -> seq -> (sender, cid, ts, conn)
    for r, _ in rooms:
        acked[r] = {}

    async def one(c, i, phase):
        msg_cid = "s%d-%d-%d-%x" % (idx, c.user, i, random.getrandbits(40))
        res["sends"] += 1
        reply = await c.send(msg_cid, body_for(msg_cid, args.body), sent_at, args.ack_timeout, phase)
        if reply is None:
            return
        res["acks"] += 1
        prev = acked[c.room].get(reply["seq"])
        if prev is not None:
            res["problems"].append("room %d seq %d acked twice: %s and %s" % (c.room, reply["seq"], prev[1], msg_cid))
        acked[c.room][reply["seq"]] = (c.user, msg_cid, reply["ts"], c)

    counters = {c: 0 for c in conns}

    async def lag_monitor():
        # how late the client's own event loop runs (client saturation inflates every latency)
        while True:
            a = time.perf_counter()
            await asyncio.sleep(0.01)
            res["lat"].setdefault(("all", "client loop lag"), []).append(time.perf_counter() - a - 0.01)
    lag_task = loop.create_task(lag_monitor())
    total_conns = args.total_conns

    # phase 1: steady rate
    t0 = time.perf_counter()
    if args.rate > 0 and args.duration > 0:
        per_conn = args.rate / total_conns
        tasks = set()

        async def pace(c):
            nxt = t0 + random.random() / per_conn
            while True:
                now = time.perf_counter()
                if nxt >= t0 + args.duration:
                    return
                if nxt > now:
                    await asyncio.sleep(nxt - now)
                counters[c] += 1
                t = loop.create_task(one(c, counters[c], "rate"))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                nxt += random.expovariate(per_conn) if args.poisson else 1.0 / per_conn

        await asyncio.gather(*(pace(c) for c in conns))
        if tasks:
            await asyncio.gather(*list(tasks))
    t1 = time.perf_counter()
    res["t_phase"]["rate"] = (t1 - t0, res["acks"])

    # phase 2: burst
    if args.burst > 0:
        await loop.run_in_executor(None, barrier.wait, 120)
        before = res["acks"]
        t2 = time.perf_counter()
        jobs = []
        for c in conns:
            for _ in range(args.burst):
                counters[c] += 1
                jobs.append(one(c, counters[c], "burst"))
        random.shuffle(jobs)
        await asyncio.gather(*jobs)
        res["t_phase"]["burst"] = (time.perf_counter() - t2, res["acks"] - before)

    lag_task.cancel()
    # wait for delivery: every connection, every seq of its room not sent on it
    want = {}
    for c in conns:
        seqs = acked[c.room]
        want[c] = len([s for s in seqs if seqs[s][3] is not c])
    deadline = time.perf_counter() + args.settle
    while time.perf_counter() < deadline and any(len(c.msgs) < want[c] for c in conns):
        await asyncio.sleep(0.05)
    await asyncio.sleep(args.quiet)

    # checks
    for r, seqs in acked.items():
        n = len(seqs)
        if sorted(seqs) != list(range(1, n + 1)):
            missing = sorted(set(range(1, max(seqs, default=0) + 1)) - set(seqs))
            res["problems"].append("room %d: acked seqs not dense 1..%d; missing %s" % (r, n, missing[:20]))
        res["rooms"][r] = {s: (v[0], v[1]) for s, v in seqs.items()}
    for c in conns:
        seqs = acked[c.room]
        w = [s for s in sorted(seqs) if seqs[s][3] is not c]
        got = [m[0] for m in c.msgs]
        if got != w:
            gs = set(got)
            missing = sorted(set(w) - gs)
            dups = sorted({s for s in got if got.count(s) > 1}) if len(gs) != len(got) else []
            own = sorted(gs & c.sent)
            disorder = [(a, b) for a, b in zip(got, got[1:]) if b <= a][:5]
            unknown = sorted(gs - set(seqs))
            res["problems"].append("%s: got %d msgs, want %d; missing %s%s; dup %s; own echoed %s; "
                                   "out of order %s; unacked seqs %s"
                                   % (c.name, len(got), len(w), missing[:12], "..." if len(missing) > 12 else "",
                                      dups[:10], own[:10], disorder, unknown[:10]))
        bad_field = 0
        for seq, frm, msg_cid, body, ts, t_recv in c.msgs:
            v = seqs.get(seq)
            if v is None:
                continue
            if (frm, msg_cid, ts) != (v[0], v[1], v[2]) or body != body_for(msg_cid, args.body):
                bad_field += 1
                if bad_field <= 3:
                    res["problems"].append("%s seq %d: fields differ from the ack: from=%r cid=%r ts=%r"
                                           % (c.name, seq, frm, msg_cid, ts))
                continue
            st = sent_at.get(msg_cid)
            if st:
                res["lat"].setdefault((st[2], "send->recv cross-node" if st[1].node != c.node
                                       else "send->recv same-node"), []).append(t_recv - st[0])
        if c.closed is not None:
            res["problems"].append("%s: connection closed: %r" % (c.name, c.closed))

    await asyncio.gather(*(c.ws.close() for c in conns), return_exceptions=True)
    for c in conns:
        c.reader.cancel()
    res["conns"] = len(conns)


# --- MySQL convergence ------------------------------------------------------------

def db_check(all_rooms, body_size, timeout):
    import pymysql
    problems = []
    times = {}
    ids = sorted(all_rooms)
    t0 = time.perf_counter()
    for role in ("primary", "replica"):
        deadline = time.perf_counter() + timeout
        left = set(ids)
        detail = {}
        while left:
            conn = pymysql.connect(host="127.0.0.1", port=MYSQL_PORTS[role], user="root", password="",
                                   database="minichat", autocommit=True, charset="utf8mb4", connect_timeout=5)
            try:
                with conn.cursor() as cur:
                    chunk = sorted(left)
                    for i in range(0, len(chunk), 50):
                        part = chunk[i:i + 50]
                        ph = ",".join(str(r) for r in part)
                        cur.execute("SELECT id, last_seq FROM rooms WHERE id IN (%s)" % ph)
                        last = dict(cur.fetchall())
                        cur.execute("SELECT room_id, COUNT(*), MIN(seq), MAX(seq) FROM messages "
                                    "WHERE room_id IN (%s) GROUP BY room_id" % ph)
                        agg = {r: (n, lo, hi) for r, n, lo, hi in cur.fetchall()}
                        for r in part:
                            n = len(all_rooms[r])
                            if last.get(r) != n or agg.get(r, (0, None, None)) != ((n, 1, n) if n else (0, None, None)):
                                detail[r] = "last_seq %r, rows/min/max %r, want %d" % (last.get(r), agg.get(r), n)
                                continue
                            # full comparison once the counts are right
                            cur.execute("SELECT seq, sender_id, client_msg_id, body FROM messages WHERE room_id=%s "
                                        "ORDER BY seq", (r,))
                            rows = cur.fetchall()
                            wantr = [(s, all_rooms[r][s][0], all_rooms[r][s][1], body_for(all_rooms[r][s][1], body_size))
                                     for s in sorted(all_rooms[r])]
                            if [tuple(x) for x in rows] != wantr:
                                diff = [(a, b) for a, b in zip(rows, wantr) if tuple(a) != b][:2]
                                detail[r] = "rows differ: %r" % (diff,)
                                continue
                            left.discard(r)
                            detail.pop(r, None)
            finally:
                conn.close()
            if not left or time.perf_counter() > deadline:
                break
            time.sleep(0.5)
        times[role] = time.perf_counter() - t0
        for r in sorted(left)[:10]:
            problems.append("%s: room %d not converged after %.0fs: %s" % (role, r, timeout, detail.get(r)))
        if left:
            problems.append("%s: %d of %d rooms not converged" % (role, len(left), len(ids)))
    return problems, times


# --- main -----------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conns", type=int, default=1000, help="WebSocket connections in total")
    ap.add_argument("--rooms", type=int, default=100)
    ap.add_argument("--dual", type=float, default=0.25, help="fraction of users with a 2nd connection on the other node")
    ap.add_argument("--rate", type=float, default=1000, help="messages/s in total during phase 1 (0: skip)")
    ap.add_argument("--duration", type=float, default=150, help="seconds of phase 1")
    ap.add_argument("--poisson", action="store_true", help="exponential gaps instead of a fixed pace")
    ap.add_argument("--burst", type=int, default=0, help="phase 2: messages per connection sent at once")
    ap.add_argument("--inflight", type=int, default=8, help="unacked sends per connection (server limit 64)")
    ap.add_argument("--body", type=int, default=100, help="body size in bytes")
    ap.add_argument("--procs", type=int, default=2, help="client processes")
    ap.add_argument("--ack-timeout", type=float, default=30)
    ap.add_argument("--settle", type=float, default=60, help="seconds to wait for deliveries after sending")
    ap.add_argument("--quiet", type=float, default=1.0, help="seconds to keep reading after that (late dups)")
    ap.add_argument("--db-timeout", type=float, default=120)
    ap.add_argument("--no-db", action="store_true")
    args = ap.parse_args()

    key = secret()
    users_n = max(2 * args.rooms, int(round(args.conns / (1 + args.dual))))
    per_room = users_n // args.rooms
    base = random.randint(10**9, 2 * 10**9)
    rooms_spec = []       # (room_id, [(user, [nodes])])
    layout = []
    k = 0
    for r in range(args.rooms):
        members = []
        for j in range(per_room):
            u = base + k
            k += 1
            first = "ab"[(r + j) % 2]
            nodes = [first, OTHER[first]] if random.random() < args.dual else [first]
            members.append((u, nodes))
        layout.append(members)
    t = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(lambda i: create_room(layout[i][0][0], [u for u, _ in layout[i][1:]], "ab"[i % 2], key),
                            range(args.rooms)))
    rooms_spec = list(zip(ids, layout))
    args.total_conns = sum(len(ns) for _, ms in rooms_spec for _, ns in ms)
    print("soak: %d rooms x %d members, %d users, %d connections (a %d / b %d), created in %.1fs"
          % (args.rooms, per_room, users_n // args.rooms * args.rooms, args.total_conns,
             sum(ns.count("a") for _, ms in rooms_spec for _, ns in ms),
             sum(ns.count("b") for _, ms in rooms_spec for _, ns in ms), time.perf_counter() - t), flush=True)
    print("soak: rate %.0f msg/s for %.0fs, burst %d/conn, inflight %d, body %dB, %d client procs"
          % (args.rate, args.duration, args.burst, args.inflight, args.body, args.procs), flush=True)

    rss0 = stack_rss()
    offsets = log_offsets()
    barrier = mp.Barrier(args.procs)
    out_q = mp.Queue()
    parts = [rooms_spec[i::args.procs] for i in range(args.procs)]
    procs = [mp.Process(target=child_main, args=(i, args, parts[i], key, barrier, out_q)) for i in range(args.procs)]
    t_start = time.perf_counter()
    for p in procs:
        p.start()
    results = [out_q.get() for _ in procs]
    for p in procs:
        p.join()
    t_end = time.perf_counter()

    agg = {"problems": [], "errors": [], "stuck": [], "lat": {}, "acks": 0, "sends": 0}
    all_rooms = {}
    phases = {}
    for _, r in sorted(results, key=lambda x: x[0]):
        for k2 in ("problems", "errors", "stuck"):
            agg[k2] += r[k2]
        for k2, xs in r["lat"].items():
            agg["lat"].setdefault(k2, []).extend(xs)
        agg["acks"] += r["acks"]
        agg["sends"] += r["sends"]
        all_rooms.update(r["rooms"])
        for ph, (dt, n) in r["t_phase"].items():
            a, b = phases.get(ph, (0, 0))
            phases[ph] = (max(a, dt), b + n)
    ms = lambda xs, p: pct(xs, p) * 1000  # noqa: E731
    for xs in agg["lat"].values():
        xs.sort()
    print("soak: %d sends, %d acks, %d error replies, %d stuck (no reply), %.1fs client time"
          % (agg["sends"], agg["acks"], len(agg["errors"]), len(agg["stuck"]), t_end - t_start))
    for ph, (dt, n) in phases.items():
        print("soak: phase %-5s %d acks in %.1fs = %.0f msg/s" % (ph, n, dt, n / dt if dt else 0))
    deliveries = sum(len(xs) for (ph, kind), xs in agg["lat"].items() if kind != "ack")
    print("soak: deliveries checked %d" % deliveries)
    for (ph, name), xs in sorted(agg["lat"].items(), key=lambda kv: (kv[0][0] != "rate", kv[0][1])):
        if xs:
            print("soak: %-5s %-22s p50 %7.1f ms  p90 %7.1f  p99 %7.1f  p99.9 %7.1f  max %7.1f  (n=%d)"
                  % (ph, name, ms(xs, 50), ms(xs, 90), ms(xs, 99), ms(xs, 99.9), xs[-1] * 1000, len(xs)))

    db_problems = []
    if not args.no_db:
        db_problems, times = db_check(all_rooms, args.body, args.db_timeout)
        print("soak: MySQL primary converged after %.1fs, replica after %.1fs (from the end of the run)"
              % (times.get("primary", -1), times.get("replica", -1)))

    time.sleep(2)
    rss1 = stack_rss()
    print("soak: RSS (kB) before -> after")
    for name in sorted(set(rss0) | set(rss1)):
        a, b = rss0.get(name), rss1.get(name)
        print("   %-28s %8s -> %8s  %s" % (name, a, b, "(%+d)" % (b - a) if a and b else ""))
    logs = new_log_lines(offsets)
    for name, (bad, stats) in logs.items():
        for l in stats[-2:]:
            print("   %s: %s" % (name, l))
        if bad:
            print("soak: %s: %d warn/error/alert lines, first: " % (name, len(bad)))
            for l in bad[:8]:
                print("      " + l)

    problems = agg["problems"] + agg["errors"] + agg["stuck"] + db_problems
    if problems:
        print("soak: FAILED, %d problems:" % len(problems))
        for p in problems[:60]:
            print("   " + p)
        if len(problems) > 60:
            print("   ...")
        return 1
    print("soak: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
