"""A/B of CPU per WebSocket send with no minichat_limit_* directive: two builds of
the module (argv[2], argv[3]: .so files) in an OwnNginx each, alternated
argv[1] times (docs/performance.md, "The ban check on every send").
Run from tests/integration with the stack up and its two env vars."""
import asyncio, json, os, re, subprocess, sys, time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from conftest import REDIS_PORT, create_room, token, uid, ws_open, ws_url, SUBPROTOCOL, cid, _redis_cli
from own_nginx import OwnNginx

class Own(OwnNginx):
    def __init__(self, so):
        super().__init__([])
        self.so = so
    def _derive(self):
        t = super()._derive()
        return re.sub(r"(?m)^load_module .*;$", "load_module %s;" % self.so, t)

HZ = os.sysconf("SC_CLK_TCK")
def cpu(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / HZ

async def run(port, room, user, n=3000, window=16):
    ws = await ws_open(ws_url(tok=token(user), port=port), subprotocols=[SUBPROTOCOL], max_size=2**22)
    await ws.recv()
    sent = 0; acked = 0; i = 0
    async def reader():
        nonlocal acked
        while acked < n:
            f = json.loads(await ws.recv())
            if f.get("op") in ("ack", "error") and "id" in f:
                assert f["op"] == "ack", f
                acked += 1
    rt = asyncio.get_running_loop().create_task(reader())
    while sent < n:
        while sent - acked < window and sent < n:
            sent += 1
            await ws.send(json.dumps({"op": "send", "id": sent, "room": room, "cid": cid(), "body": "x"}))
        await asyncio.sleep(0)
        if sent - acked >= window:
            await asyncio.sleep(0.0005)
    await rt
    await ws.close()

def one(so, label):
    o = Own(so).start()
    try:
        time.sleep(0.5)
        user = uid(); room = create_room(user, [uid()])
        master = o.master_pid()
        wpid = int(subprocess.check_output(["pgrep", "-P", str(master)]).split()[0])
        rpid = int([l for l in _redis_cli(REDIS_PORT, ["INFO", "server"]) if l.startswith("process_id:")][0].split(":")[1])
        asyncio.run(run(o.port, room, user, n=300))  # warm-up
        w0, r0, t0 = cpu(wpid), cpu(rpid), time.monotonic()
        n = 3000
        asyncio.run(run(o.port, room, user, n=n))
        w1, r1, t1 = cpu(wpid), cpu(rpid), time.monotonic()
        return label, (w1 - w0) / n * 1e6, (r1 - r0) / n * 1e6, (t1 - t0) / n * 1e6
    finally:
        o.stop()

res = {"A": [], "B": []}
for k in range(int(sys.argv[1]) if len(sys.argv) > 1 else 5):
    for label, so in (("A", sys.argv[2]), ("B", sys.argv[3])):
        r = one(so, label)
        res[label].append(r[1:])
        print("%s nginx %.1f us/send  redis %.1f us/send  wall %.1f us/send" % r, flush=True)
import statistics as st
for label in "AB":
    print(label, "median nginx %.1f redis %.1f wall %.1f" % tuple(st.median(x[i] for x in res[label]) for i in range(3)))
