#!/usr/bin/env python3
"""What else ran on the box while a phase was timed.

  box_cpu.py snap FILE          writes the box's busy CPU time and every
                                process's CPU time (from /proc) to FILE
  box_cpu.py diff FILE [PID..]  prints, as one JSON object, what happened
                                since the snapshot: the wall time, the busy
                                CPU time of the whole box (all CPUs), and the
                                processes that used the most CPU in between,
                                the PIDs given (the phase's own path) left out

A process is named by its command (comm) and, for a JVM or a server run
under a generic name, by the first distinctive word of its command line.
Threads are summed into their process (/proc/PID/stat counts them).  Times
are in ms; the clock tick is 10 ms on most kernels, so a process under a
few ticks is noise.  A measurement aid: it asserts nothing.
"""

import json
import os
import re
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")
TOP = 5


def busy_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is in user)
    return v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)


def processes():
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                s = f.read()
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        comm = s[s.index("(") + 1:s.rindex(")")]
        fields = s[s.rindex(")") + 2:].split()
        out[d] = {"name": name(comm, cmd), "start": fields[19], "ticks": int(fields[11]) + int(fields[12])}
    return out


def name(comm, cmd):
    """comm, plus what tells one java (or python) from another: a JVM's main
    class (kafka.Kafka), a script's file name."""
    words = [w.decode(errors="replace") for w in cmd[1:] if w]
    if comm == "java":
        for w in words:
            if re.match(r"^[a-z][\w]*(\.[\w$]+)*\.[A-Z][\w$]*$", w):
                return "java " + w
    elif comm in ("python3", "python", "bash"):
        for w in words:
            if not w.startswith("-"):
                return "%s %s" % (comm, os.path.basename(w)[:40])
    return comm


def snap(path):
    with open(path, "w") as f:
        json.dump({"t": time.monotonic(), "busy": busy_ticks(), "procs": processes()}, f)


def diff(path, skip):
    with open(path) as f:
        s0 = json.load(f)
    t1, b1, p1 = time.monotonic(), busy_ticks(), processes()
    used = []
    for pid, p in p1.items():
        if pid in skip or int(pid) == os.getpid():
            continue
        before = s0["procs"].get(pid)
        # a pid seen before is the same process when it started at the same tick
        d = p["ticks"] - (before["ticks"] if before and before["start"] == p["start"] else 0)
        if d > 0:
            used.append({"pid": int(pid), "name": p["name"], "cpu_ms": d * 1000 // HZ})
    used.sort(key=lambda x: -x["cpu_ms"])
    print(json.dumps({"wall_ms": int((t1 - s0["t"]) * 1000), "cpus": os.cpu_count(),
                      "busy_ms": (b1 - s0["busy"]) * 1000 // HZ, "others": used[:TOP]}))


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "snap":
        snap(sys.argv[2])
    elif len(sys.argv) >= 3 and sys.argv[1] == "diff":
        diff(sys.argv[2], set(sys.argv[3:]))
    else:
        sys.stderr.write(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main()
