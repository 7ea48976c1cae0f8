#!/usr/bin/env python3
"""The report of bench/bench.sh: its records in, one table out.

  report.py --line RECORD_JSON
      one progress line for a finished run
  report.py --records F --machine START END --mode full|smoke --json OUT --md OUT
      prints the Markdown report and writes it to OUT.md, with everything
      measured in OUT.json

Records are JSON objects, one a line, as bench.sh writes them: a fan-out
run (scenario 2) has system, rate, round, offered, delivered,
deliveries_per_s, p50_us, p99_us and cpu_ms per group of processes, and
the table shows each system's median per rate over its rounds
(fanout_medians); a cross-node run
(scenario 3) has system, round, p50_us, p99_us, p999_us, max_us, ack_p50_us,
ack_p99_us and cpu_ms,
and the table shows the median of the rounds (render_s3); idle runs
(scenario 1) have the memory of the processes holding the sockets before
and after (kB), and rate-limit runs (scenario 4) bench/ratelimit.sh's
medians, runs and CPU per decision (render_s1, render_s4); a scenario not
measured yet has status "not yet" and a note.  CPU per million deliveries is CPU
seconds over delivered / 1e6, i.e. CPU microseconds per delivery.
"""

import argparse
import datetime
import json
import sys

SYSTEMS = ("minichat", "floor", "centrifugo")
NAMES = {"minichat": "MiniChat", "floor": "floor", "centrifugo": "Centrifugo"}
# the process that takes the clients' sockets, per system
FRONT = {"minichat": "nginx", "floor": "floor", "centrifugo": "centrifugo"}
# MiniChat's processes in the order a message meets them
PATH_ORDER = ("nginx", "redis", "relay", "kafka", "consumer", "mysql")
SCENARIOS = {
    1: "idle connections: worker memory per connection",
    2: "fan-out: one room of 1,000 members on one node",
    3: "cross-node latency: 2-member room, 1,000 msg/s",
    4: "rate-limit decisions per second through nginx",
    5: "persistence into MariaDB; history page p99",
}


def per_million(cpu_ms, delivered):
    """CPU seconds per million deliveries (= CPU us per delivery), or None."""
    if not delivered or cpu_ms is None:
        return None
    return cpu_ms * 1000.0 / delivered


def derive(r):
    """Adds the derived figures to a fan-out record."""
    cpu = r.get("cpu_ms") or {}
    r["cpu_s_per_m_path"] = per_million(sum(cpu.values()) if cpu else None, r.get("delivered"))
    r["cpu_s_per_m_front"] = per_million(cpu.get(FRONT[r["system"]]), r.get("delivered"))
    r["cpu_s_per_m_by_process"] = {g: per_million(ms, r.get("delivered")) for g, ms in cpu.items()}
    return r


def fmt(v, digits=1):
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if abs(v) >= 1000:
        return "{:,.0f}".format(v)
    return "{:.{}f}".format(v, digits)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def line(r):
    if r.get("scenario") == 5:
        return line_s5(r)
    r = derive(r)
    return ("fan-out %s %s msg/s: %s of %s delivered (%s), %s deliveries/s, p50 %s ms p99 %s ms, "
            "%s CPU s per million deliveries (%s in %s)" % (
                NAMES[r["system"]], r["rate"], r.get("delivered"), r.get("offered"),
                "PASS" if r.get("pass") else "FAIL", fmt(r.get("deliveries_per_s"), 0),
                fmt(ms(r.get("p50_us")), 2), fmt(ms(r.get("p99_us")), 2), fmt(r["cpu_s_per_m_path"], 2),
                fmt(r["cpu_s_per_m_front"], 2), FRONT[r["system"]]))


def ms(us):
    return None if us is None else us / 1000.0


def fanout_medians(runs):
    """One figure per system and rate: with S2_RUNS > 1, the median of its
    runs (delivered and offered summed over them)."""
    groups = {}
    for r in runs:
        groups.setdefault((r["system"], r["rate"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        m = dict(rs[-1])
        m["runs"] = len(rs)
        for f in ("delivered", "offered"):
            vals = [r.get(f) for r in rs]
            m[f] = sum(vals) if all(v is not None for v in vals) else None
        m["pass"] = all(r.get("pass") for r in rs)
        for f in ("deliveries_per_s", "p50_us", "p99_us", "p999_us", "cpu_s_per_m_path", "cpu_s_per_m_front"):
            m[f] = median(r.get(f) for r in rs)
        procs = {g for r in rs for g in r["cpu_s_per_m_by_process"]}
        m["cpu_s_per_m_by_process"] = {g: median(r["cpu_s_per_m_by_process"].get(g) for r in rs) for g in procs}
        out[key] = m
    return out


def fanout_tables(runs, skipped):
    rates = sorted({r["rate"] for r in runs})
    present = [s for s in SYSTEMS if any(r["system"] == s for r in runs)]
    out = ["## Scenario 2 — %s" % SCENARIOS[2], ""]
    by = fanout_medians(runs)
    if runs:
        r0 = runs[0]
        nruns = max(m["runs"] for m in by.values())
        out.append("%d members + the sender, %d messages per step; CPU of every process on the path "
                   "(MiniChat: bench nginx workers, relay-worker, Redis, Kafka, roomlist-consumer, MariaDB "
                   "primary; floor and Centrifugo: their one process), from all connected to the end of the run."
                   % (r0["members"], r0["messages"]))
        if nruns > 1:
            out.append("Each figure is the median of %d runs per system and rate (S2_RUNS), the systems "
                       "alternated within each round; delivered / offered are their sums." % nruns)
        out.append("")
    for s, why in skipped:
        out.append("%s: skipped — %s." % (NAMES[s], why))
        out.append("")
    head = "| msg/s | | " + " | ".join(NAMES[s] for s in present)
    sep = "| ---: | --- | " + " | ".join("---:" for _ in present)
    ratios = [(a, b) for a, b in (("minichat", "floor"), ("minichat", "centrifugo")) if a in present and b in present]
    head += "".join(" | %s/%s" % (NAMES[a], NAMES[b]) for a, b in ratios) + " |"
    sep += "".join(" | ---:" for _ in ratios) + " |"
    out += [head, sep]
    metrics = (
        ("delivered / offered", lambda r: "%s / %s" % (r.get("delivered"), r.get("offered")), None),
        ("deliveries/s", lambda r: r.get("deliveries_per_s"), 0),
        ("p50 ms", lambda r: ms(r.get("p50_us")), 2),
        ("p99 ms", lambda r: ms(r.get("p99_us")), 2),
        ("CPU s / M deliveries (path)", lambda r: r["cpu_s_per_m_path"], 2),
        ("CPU s / M deliveries (front)", lambda r: r["cpu_s_per_m_front"], 2),
    )
    for rate in rates:
        for i, (name, get, digits) in enumerate(metrics):
            cells = []
            for s in present:
                r = by.get((s, rate))
                v = get(r) if r else None
                cells.append(fmt(v, digits) if digits is not None else (v or "—"))
            rc = []
            for a, b in ratios:
                ra, rb = by.get((a, rate)), by.get((b, rate))
                if digits is None or ra is None or rb is None:
                    rc.append("")
                else:
                    x = ratio(get(ra), get(rb))
                    rc.append("" if x is None else "%.2f×" % x)
            out.append("| %s | %s | %s%s |" % (rate if i == 0 else "", name, " | ".join(cells),
                                                "".join(" | " + c for c in rc)))
    mc = [by[("minichat", rate)] for rate in rates if ("minichat", rate) in by]
    if mc:
        seen = {g for r in mc for g in (r.get("cpu_ms") or {})}
        groups = [g for g in PATH_ORDER if g in seen] + sorted(seen - set(PATH_ORDER))
        out += ["", "MiniChat's CPU s per million deliveries by process:", "",
                "| msg/s | " + " | ".join(groups) + " |", "| ---: | " + " | ".join("---:" for _ in groups) + " |"]
        for r in mc:
            out.append("| %s | %s |" % (r["rate"], " | ".join(fmt(r["cpu_s_per_m_by_process"].get(g), 2)
                                                               for g in groups)))
    return out


def fanout_ratios(runs):
    """Per rate, MiniChat's figures over the floor's and Centrifugo's (medians of the runs)."""
    by = fanout_medians(runs)
    out = []
    for rate in sorted({r["rate"] for r in runs}):
        mc = by.get(("minichat", rate))
        for other in ("floor", "centrifugo"):
            o = by.get((other, rate))
            if mc is None or o is None:
                continue
            out.append({"rate": rate, "of": "minichat/" + other,
                        "deliveries_per_s": ratio(mc.get("deliveries_per_s"), o.get("deliveries_per_s")),
                        "p50": ratio(mc.get("p50_us"), o.get("p50_us")),
                        "p99": ratio(mc.get("p99_us"), o.get("p99_us")),
                        "cpu_path": ratio(mc["cpu_s_per_m_path"], o["cpu_s_per_m_path"]),
                        "cpu_front": ratio(mc["cpu_s_per_m_front"], o["cpu_s_per_m_front"])})
    return out


# --- scenario 3: cross-node latency -----------------------------------------

S3_SYSTEMS = ("minichat", "centrifugo")
S3_TARGET_P99_US = 1000  # the brief's cross-node p99 at 1k msg/s
# the processes in the order a message meets them
S3_PATH_ORDER = ("nginx-a", "redis", "relay-a", "kafka", "relay-b", "nginx-b", "consumer", "mysql",
                 "centrifugo-1", "centrifugo-2")

S5_TARGET_RATIO = 2.0 / 3.0   # the brief: persistence >= 2/3 of the raw insert
S5_TARGET_P99_US = 1000       # the brief: a history page p99 <= 1 ms at any depth
S5_CPU_GROUPS = ("consumer", "mysql", "kafka", "replica", "client")


def s5_rate(r):
    """Rows per second of a persistence record, or None."""
    return r["rows"] * 1000.0 / r["ms"] if r.get("ms") else None


def s5_us_per_row(r, group):
    """CPU microseconds of a group of processes per row stored ("all": every
    group recorded, the writer's own process included), or None."""
    groups = r.get("cpu_ms") or {}
    cpu = sum(groups.values()) if group == "all" and groups else groups.get(group)
    return None if cpu is None or not r.get("rows") else cpu * 1000.0 / r["rows"]


def line_s5(r):
    if r["part"] == "persist":
        return ("persistence %s: %s of %s rows in %s ms, %s rows/s; CPU us per row: %s" % (
            r["system"], r.get("stored"), r["rows"], r["ms"], fmt(s5_rate(r), 0),
            ", ".join("%s %s" % (g, fmt(s5_us_per_row(r, g), 2)) for g in S5_CPU_GROUPS
                      if g in (r.get("cpu_ms") or {}))))
    return ("history at before=%s of %s rows: %s pages, %s errors, p50 %s ms p99 %s ms p99.9 %s ms; "
            "replica statements %s, Redis log %s entries, replica pages read from disk %s%s" % (
                r["depth"], fmt(r["rows"], 0), r["pages"], r["errors"], fmt(ms(r["p50_us"]), 3),
                fmt(ms(r["p99_us"]), 3), fmt(ms(r["p999_us"]), 3), r["replica_stmts"], r["redis_log"],
                r.get("disk_reads", "—"), s5_warm_note(r)))


def s5_warm_note(r):
    """How the replica's pool was prepared (records before 2026-12-04 16:30 do not say)."""
    if "warmed" not in r:
        return ""
    return " (pool warmed by one scan of the room)" if r["warmed"] else " (pool not warmed)"


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2.0


def derive_s3(r):
    """Adds CPU microseconds per delivered message (path and by process)."""
    cpu = r.get("cpu_ms") or {}
    r["cpu_us_per_msg_path"] = per_million(sum(cpu.values()) if cpu else None, r.get("delivered"))
    r["cpu_us_per_msg_by_process"] = {g: per_million(v, r.get("delivered")) for g, v in cpu.items()}
    return r


def line_s3(r):
    r = derive_s3(r)
    return ("cross-node %s run %s: %s of %s delivered (%s), p50 %s ms p99 %s ms p99.9 %s ms max %s ms, "
            "ack p50 %s ms p99 %s ms, %s CPU us per message" % (
                NAMES[r["system"]], r["round"], r.get("delivered"), r.get("offered"),
                "PASS" if r.get("pass") else "FAIL", fmt(ms(r.get("p50_us")), 3), fmt(ms(r.get("p99_us")), 3),
                fmt(ms(r.get("p999_us")), 3), fmt(ms(r.get("max_us")), 3), fmt(ms(r.get("ack_p50_us")), 3),
                fmt(ms(r.get("ack_p99_us")), 3), fmt(r["cpu_us_per_msg_path"], 1)))


def summary_s3(runs, skipped):
    """Per system: the runs' sums and the medians the table shows."""
    out = {}
    for s in S3_SYSTEMS:
        rs = [r for r in runs if r["system"] == s]
        if not rs:
            continue
        seen = {g for r in rs for g in r["cpu_us_per_msg_by_process"]}
        groups = [g for g in S3_PATH_ORDER if g in seen] + sorted(seen - set(S3_PATH_ORDER))
        out[s] = {
            "runs": len(rs),
            "pass": all(r.get("pass") for r in rs),
            "offered": sum(r.get("offered") or 0 for r in rs),
            "delivered": sum(r.get("delivered") or 0 for r in rs),
            "late_sends": (None if any(r.get("late_sends") is None for r in rs)
                           else sum(r["late_sends"] for r in rs)),
            "p50_us": median(r.get("p50_us") for r in rs),
            "p99_us": median(r.get("p99_us") for r in rs),
            "p999_us": median(r.get("p999_us") for r in rs),
            "max_us": median(r.get("max_us") for r in rs),
            "ack_p50_us": median(r.get("ack_p50_us") for r in rs),
            "ack_p99_us": median(r.get("ack_p99_us") for r in rs),
            "cpu_us_per_msg_path": median(r["cpu_us_per_msg_path"] for r in rs),
            "cpu_us_per_msg_by_process": {g: median(r["cpu_us_per_msg_by_process"].get(g) for r in rs)
                                          for g in groups},
        }
    mc, cf = out.get("minichat"), out.get("centrifugo")
    ratios = None
    if mc and cf:
        ratios = {k: ratio(mc[k], cf[k]) for k in ("p50_us", "p99_us", "p999_us", "max_us", "ack_p50_us", "ack_p99_us",
                                                   "cpu_us_per_msg_path")}
    met = None
    if mc and mc["p99_us"] is not None:
        met = mc["pass"] and mc["p99_us"] <= S3_TARGET_P99_US
    return {"title": SCENARIOS[3], "runs": runs, "skipped": dict(skipped), "medians": out,
            "minichat_over_centrifugo": ratios, "target_p99_us": S3_TARGET_P99_US, "target_met": met}


def render_s3(summary):
    runs, med, skipped = summary["runs"], summary["medians"], summary["skipped"]
    present = [s for s in S3_SYSTEMS if s in med]
    out = ["## Scenario 3 — %s" % SCENARIOS[3], ""]
    if runs:
        r0 = runs[0]
        out.append("A 2-member room: the sender on node a, the member on node b; %s messages at %s/s per run, "
                   "send → receive (CLOCK_MONOTONIC stamps of the load generator). Median of %s run(s) per "
                   "system, the systems taking turns. CPU of every process on the path (MiniChat: both bench "
                   "nginx, both relay-workers, Redis, Kafka, roomlist-consumer, MariaDB primary; Centrifugo: both "
                   "nodes and their Redis), from all connected to the end of the run, per message delivered."
                   % (fmt(r0["messages"], 0), r0["rate"],
                      " / ".join(sorted({str(med[s]["runs"]) for s in present}))))
        out.append("")
    for s, why in skipped.items():
        if s != "floor":
            out.append("%s: skipped — %s." % (NAMES[s], why))
            out.append("")
    cols = present + (["floor"] if "floor" in skipped else [])
    both = "minichat" in med and "centrifugo" in med
    out.append("| | " + " | ".join(NAMES[s] for s in cols) + (" | MiniChat/Centrifugo |" if both else " |"))
    out.append("| --- | " + " | ".join("---:" for _ in cols) + (" | ---: |" if both else " |"))
    metrics = (("delivered / offered", None), ("sends > 1 ms late", "late_sends"), ("p50 ms", "p50_us"),
               ("p99 ms", "p99_us"), ("p99.9 ms", "p999_us"), ("max ms", "max_us"),
               ("sender's ack p50 ms", "ack_p50_us"), ("sender's ack p99 ms", "ack_p99_us"),
               ("CPU µs / message (path)", "cpu_us_per_msg_path"))
    for name, key in metrics:
        cells = []
        for s in cols:
            if s not in med:
                cells.append("n/a")
            elif key is None:
                cells.append("%d / %d" % (med[s]["delivered"], med[s]["offered"]))
            elif key == "late_sends":
                cells.append(fmt(med[s][key], 0))
            elif key.endswith("_us") and key != "cpu_us_per_msg_path":
                cells.append(fmt(ms(med[s][key]), 3))
            else:
                cells.append(fmt(med[s][key], 1))
        rc = ""
        if both:
            x = summary["minichat_over_centrifugo"].get(key) if key and key != "late_sends" else None
            rc = " | " + ("" if x is None else "%.2f×" % x)
        out.append("| %s | %s%s |" % (name, " | ".join(cells), rc))
    out.append("")
    if "floor" in skipped:
        out += ["floor: %s." % skipped["floor"], ""]
    if runs and runs[0]["rate"] == 1000 and "minichat" in med and med["minichat"]["p99_us"] is not None:
        m = med["minichat"]
        if not m["pass"]:
            # a run that lost messages has no latency worth a verdict (a run
            # with nothing delivered reports a p99 of 0)
            verdict = "not met: %d of %d delivered" % (m["delivered"], m["offered"])
        else:
            verdict = "met" if m["p99_us"] <= S3_TARGET_P99_US else "not met"
        out += ["Target (product brief): cross-node p99 ≤ 1 ms at 1k msg/s — MiniChat's median p99 %s ms: %s."
                % (fmt(ms(m["p99_us"]), 3), verdict), ""]
    per_run = ["%s run %s: %s / %s / %s ms" % (NAMES[r["system"]], r["round"], fmt(ms(r.get("p50_us")), 3),
                                               fmt(ms(r.get("p99_us")), 3), fmt(ms(r.get("p999_us")), 3))
               for r in runs]
    if per_run:
        out += ["Each run, p50 / p99 / p99.9: " + "; ".join(per_run) + ".", ""]
    for s in present:
        by = med[s]["cpu_us_per_msg_by_process"]
        if by:
            out += ["%s's CPU µs per message by process (median): %s." % (
                NAMES[s], ", ".join("%s %s" % (g, fmt(v, 1)) for g, v in by.items())), ""]
    return out


def idle_per_conn(r, kind="pss"):
    """Bytes of memory per open connection of an idle run (kind pss, rss or
    redis_pss), or None."""
    before, after, n = r.get(kind + "_before_kb"), r.get(kind + "_after_kb"), r.get("open")
    if before is None or after is None or not n:
        return None
    return (after - before) * 1024.0 / n


def line_s1(r):
    if "skipped" in r:
        return "idle %s at %s: skipped (%s)" % (NAMES[r["system"]], "{:,}".format(r["conns"]), r["skipped"])
    return ("idle %s: %s of %s open (%s), %s closed, fewest pings answered %s, %s B Pss / %s B RSS per connection "
            "(%s %s process(es))" % (
                NAMES[r["system"]], r.get("open"), r.get("conns"), "PASS" if r.get("pass") else "FAIL",
                r.get("closed"), r.get("min_pings"), fmt(idle_per_conn(r), 0), fmt(idle_per_conn(r, "rss"), 0),
                r.get("procs"), r.get("measured")))


def render_s1(recs):
    """Scenario 1's section: (its JSON, its Markdown lines)."""
    big = [r for r in recs if r.get("conns") == 100000 and r.get("system") == "minichat"
           and ("skipped" in r or r.get("via"))]
    runs = [r for r in recs if r not in big and "skipped" not in r]
    skipped = [(r["system"], r["skipped"]) for r in recs if r not in big and "skipped" in r]
    for r in runs + big:
        for kind in ("pss", "rss", "redis_pss"):
            r[kind + "_per_conn_bytes"] = idle_per_conn(r, kind)
    by = {r["system"]: r for r in runs}
    present = [s for s in SYSTEMS if s in by]
    ratios = [(a, b) for a, b in (("minichat", "floor"), ("minichat", "centrifugo")) if a in by and b in by]
    out = ["## Scenario 1 — %s" % SCENARIOS[1], ""]
    if runs:
        r0 = runs[0]
        out += ["%s idle authenticated connections per system (as many users, no room), held %s s after the last "
                "opened; memory (Pss, RSS: /proc/PID/smaps_rollup, summed) of the processes holding the sockets, "
                "taken before the load generator started and %s s into the hold, over the connections "
                "open." % ("{:,}".format(r0["conns"]), r0["hold_s"], r0.get("measured_at_s")), ""]
    for s, why in skipped:
        out += ["%s: skipped — %s." % (NAMES[s], why), ""]
    if present:
        out.append("| | " + " | ".join(NAMES[s] for s in present)
                   + "".join(" | %s/%s" % (NAMES[a], NAMES[b]) for a, b in ratios) + " |")
        out.append("| --- | " + " | ".join("---:" for _ in present) + "".join(" | ---:" for _ in ratios) + " |")

        def row(name, get, ratio_of=None):
            cells = [get(by[s]) for s in present]
            rc = []
            for a, b in ratios:
                x = ratio(ratio_of(by[a]), ratio_of(by[b])) if ratio_of else None
                rc.append("" if x is None else "%.2f×" % x)
            out.append("| %s | %s%s |" % (name, " | ".join(cells), "".join(" | " + c for c in rc)))

        row("open of asked (pass)", lambda r: "%s of %s (%s)" % (fmt(r.get("open"), 0), fmt(r.get("conns"), 0),
                                                                 "PASS" if r.get("pass") else "FAIL"))
        row("closed / fewest pings answered",
            lambda r: "%s / %s%s" % (r.get("closed"), r.get("min_pings"),
                                     "" if r.get("min_pings_asked") else " (none asked)"))
        row("processes measured", lambda r: "%s %s" % (r.get("procs"), r.get("measured")))
        row("Pss before → after (MB)", lambda r: "%s → %s" % (
            fmt(r["pss_before_kb"] / 1024.0), fmt(None if r.get("pss_after_kb") is None else r["pss_after_kb"] / 1024.0)))
        row("**Pss per connection (B)**", lambda r: fmt(r["pss_per_conn_bytes"], 0), lambda r: r["pss_per_conn_bytes"])
        row("RSS per connection (B)", lambda r: fmt(r["rss_per_conn_bytes"], 0), lambda r: r["rss_per_conn_bytes"])
        if any(r.get("redis_pss_per_conn_bytes") is not None for r in runs):
            row("+ Redis Pss per connection (B)", lambda r: fmt(r.get("redis_pss_per_conn_bytes"), 0))
        out.append("")
        mc = by.get("minichat")
        if mc and mc["pss_per_conn_bytes"] is not None:
            out += ["The brief's target, at most 2 KiB (2,048 B) per idle connection: MiniChat %s B at %s — %s. "
                    "MiniChat's Redis row is the sessions and presence its connections keep there, not counted "
                    "in the workers' figure (the floor keeps nothing; Centrifugo's memory engine keeps its "
                    "state in its own process)." % (
                        fmt(mc["pss_per_conn_bytes"], 0), "{:,}".format(mc["conns"]),
                        ("holds" if mc["pss_per_conn_bytes"] <= 2048 else "does not hold") if mc.get("pass")
                        else "no verdict: %s of %s connections opened" % (mc.get("open"), mc.get("conns"))), ""]
    for r in big:
        if "skipped" in r:
            out += ["MiniChat alone at 100,000 connections: skipped (%s)." % r["skipped"], ""]
        else:
            out += ["MiniChat alone at 100,000 connections (bench/idle.sh: %s nginx workers, reuseport, several "
                    "source addresses): %s of 100,000 open in %s s (%s), %s closed, fewest pings answered %s; "
                    "workers' Pss %s → %s MB, **%s B per connection**." % (
                        r.get("procs"), fmt(r.get("open"), 0), fmt(r.get("open_s")), "PASS" if r.get("pass") else "FAIL",
                        r.get("closed"), r.get("min_pings"),
                        fmt(None if r.get("pss_before_kb") is None else r["pss_before_kb"] / 1024.0),
                        fmt(None if r.get("pss_after_kb") is None else r["pss_after_kb"] / 1024.0),
                        fmt(r["pss_per_conn_bytes"], 0)), ""]
    result = {"title": SCENARIOS[1], "runs": runs, "skipped": dict(skipped), "at_100k": big[0] if big else None,
              "ratios": [{"of": "%s/%s" % (a, b),
                          "pss_per_conn": ratio(by[a]["pss_per_conn_bytes"], by[b]["pss_per_conn_bytes"]),
                          "rss_per_conn": ratio(by[a]["rss_per_conn_bytes"], by[b]["rss_per_conn_bytes"])}
                         for a, b in ratios]}
    return result, out


# Scenario 4's loads, as bench/ratelimit.sh names them
RL_LOADS = (
    ("redis_benchmark", "redis-benchmark: EVALSHA limit.lua, random keys, 256 clients × 16 pipelined"),
    ("ws", "MiniChat, WebSocket: `send`s refused by the limit, 64 connections × 32 in flight"),
    ("rest_h2", "MiniChat, REST over h2c: 256 connections × 16 streams"),
    ("rest_h1", "MiniChat, REST over HTTP/1.1: 256 connections × 16 pipelined"),
    ("floor_h2", "nginx's h2c floor: a 404 before the token, no Redis"),
    ("floor_h1", "nginx's HTTP/1.1 floor: a 404 before the token, no Redis"),
)
RL_NOT_APPLICABLE = {
    "floor": "has no rate limiter: it takes every send",
    "centrifugo": "its open-source edition has no per-user rate limiter of this kind: operation rate limits, "
                  "Redis throttling and the rate-limit API are Centrifugo PRO features "
                  "(centrifugal.dev/docs/pro/rate_limiting, /docs/pro/distributed_rate_limit)",
}


def rl_ratio(r, key):
    return ratio((r.get("median") or {}).get(key), (r.get("median") or {}).get("redis_benchmark"))


def rl_cpu_bound(cpu):
    """The rate that CPU per decision allows on two cores of our own: Redis
    runs the script on one core at most, and everything shares the two (as
    bench/ratelimit.sh's "2-core max"), or None."""
    if not cpu:
        return None
    total = cpu["redis"] + cpu["nginx"] + cpu["load"]
    bounds = [2e6 / total] if total > 0 else []
    if cpu["redis"] > 0:
        bounds.append(1e6 / cpu["redis"])
    return min(bounds) if bounds else None


def line_s4(r):
    m = r.get("median") or {}
    return ("rate limit, medians of %s: redis-benchmark %s/s; through nginx WebSocket %s/s (%s%%), REST h2c %s/s (%s%%)"
            % (r.get("runs"), fmt(m.get("redis_benchmark"), 0), fmt(m.get("ws"), 0),
               fmt(None if rl_ratio(r, "ws") is None else 100 * rl_ratio(r, "ws"), 0), fmt(m.get("rest_h2"), 0),
               fmt(None if rl_ratio(r, "rest_h2") is None else 100 * rl_ratio(r, "rest_h2"), 0)))


def render_s4(recs):
    """Scenario 4's section: (its JSON, its Markdown lines)."""
    r = recs[-1]
    r["of_redis_benchmark"] = {k: rl_ratio(r, k) for k, _ in RL_LOADS if k != "redis_benchmark"}
    out = ["## Scenario 4 — %s" % SCENARIOS[4], "",
           "lua/limit.lua's decisions per second, median of %s runs of %s s each (bench/ratelimit.sh); CPU µs per "
           "decision of Redis / the bench nginx's workers / the load generator (all on the same 2 cores), and the "
           "rate that CPU allows on two cores of our own (at most 1e6 / Redis µs, and 2e6 / total µs), which a "
           "shared box moves much less than the rates. The WebSocket load is the refusal path (64 users refused "
           "again and again: no write in Redis); the REST loads, like redis-benchmark's random keys, mostly the "
           "allowed path with a new key: REST h2c is the row to compare."
           % (r.get("runs"), r.get("seconds")), "",
           "| load | decisions/s | runs | / redis-benchmark | CPU µs per decision (Redis / nginx / load) "
           "| CPU-bound rate, 2 cores | / redis-benchmark's |",
           "| --- | ---: | --- | ---: | --- | ---: | ---: |"]
    cpu_of = r.get("cpu_us") or {}
    rb_bound = rl_cpu_bound(cpu_of.get("redis_benchmark"))
    for key, name in RL_LOADS:
        cpu = cpu_of.get(key)
        x = rl_ratio(r, key) if key != "redis_benchmark" else None
        bound = rl_cpu_bound(cpu)
        y = ratio(bound, rb_bound) if key != "redis_benchmark" else None
        out.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            name, fmt((r.get("median") or {}).get(key), 0),
            ", ".join(fmt(v, 0) for v in (r.get("runs_each") or {}).get(key, [])),
            "" if x is None else "%.0f%%" % (100 * x),
            "—" if not cpu else "%s / %s / %s" % (cpu["redis"], cpu["nginx"], cpu["load"]),
            fmt(bound, 0), "" if y is None else "%.0f%%" % (100 * y)))
    for s in ("floor", "centrifugo"):
        out.append("| %s | n/a | | | %s | | |" % (NAMES[s], RL_NOT_APPLICABLE[s]))
    ws, h2 = rl_ratio(r, "ws"), rl_ratio(r, "rest_h2")
    h2_bound = ratio(rl_cpu_bound(cpu_of.get("rest_h2")), rb_bound)
    if ws is not None and h2 is not None:
        out += ["", "The brief's target, decisions through nginx at least 80%% of redis-benchmark's: measured, "
                "WebSocket %.0f%% (%s), REST h2c %.0f%% (%s); REST h2c as its CPU allows, %s." % (
                    100 * ws, "holds" if ws >= 0.8 else "does not hold", 100 * h2,
                    "holds" if h2 >= 0.8 else "does not hold",
                    "—" if h2_bound is None else "%.0f%% (%s)" % (100 * h2_bound,
                                                                   "holds" if h2_bound >= 0.8 else "does not hold"))]
    out.append("")
    result = dict(r, title=SCENARIOS[4], not_applicable=RL_NOT_APPLICABLE,
                  cpu_bound_per_s={k: rl_cpu_bound(cpu_of.get(k)) for k, _ in RL_LOADS})
    return result, out


RENDER = {1: render_s1, 4: render_s4}
LINE = {1: line_s1, 4: line_s4}


def s5_result(recs):
    """Scenario 5's JSON: the records, the medians, the ratio and the targets met."""
    per = [r for r in recs if r["part"] == "persist"]
    hist = [r for r in recs if r["part"] == "history"]
    med = {}
    for sysname in ("consumer", "raw"):
        runs = [r for r in per if r["system"] == sysname]
        if runs:
            med[sysname] = {"rows_per_s": median(s5_rate(r) for r in runs), "runs": len(runs),
                            "us_per_row": {g: median(s5_us_per_row(r, g) for r in runs)
                                           for g in S5_CPU_GROUPS + ("all",)}}
    rounds = {}
    for r in per:
        rounds.setdefault(r.get("round", 1), {})[r["system"]] = r
    round_ratios = [ratio(s5_rate(x["consumer"]), s5_rate(x["raw"])) for x in rounds.values()
                    if "consumer" in x and "raw" in x]
    rat = median(round_ratios)
    depths = [r for r in hist if r["depth"] != "all"]
    worst = max((r["p99_us"] for r in depths), default=None)
    return {"title": SCENARIOS[5], "persistence": per, "persistence_medians": med, "history": hist,
            "consumer_over_raw": rat, "consumer_over_raw_by_round": round_ratios, "persistence_target_met": None if rat is None else rat >= S5_TARGET_RATIO,
            "history_p99_worst_us": worst,
            "history_target_met": (None if worst is None
                                   else worst <= S5_TARGET_P99_US and not any(r["errors"] for r in depths)),
            "history_from_mysql": all(r["replica_stmts"] >= sum(x["pages"] for x in depths) for r in hist)
            if hist else None,
            "floor": "n/a: the floor stores nothing",
            "centrifugo": "n/a: Centrifugo keeps history in memory or Redis only, no database"}


def render_s5(res):
    """Scenario 5's Markdown."""
    out = ["## Scenario 5 — %s" % SCENARIOS[5], "",
           "The floor and Centrifugo: n/a (the floor stores nothing; Centrifugo keeps history in memory or "
           "Redis only, it has no database to persist into or page from).", ""]
    per = res["persistence"]
    if per:
        r0 = per[0]
        out += ["Persistence: %d rows of %d-byte bodies for %d rooms into the stack's MariaDB primary (binlog "
                "on, ROW, replicated; both writers into `messages`, each phase from the same quiet state), from "
                "the first produce (or statement) to the last row stored, in %d round(s), the consumer first in "
                "odd rounds and the raw insert first in even ones; CPU in µs per row."
                % (r0["rows"], r0["body_bytes"], r0["rooms"], len({r.get("round", 1) for r in per})), "",
                "| round | writer | rows stored | ms | rows/s | consumer µs/row | MariaDB µs/row | Kafka µs/row "
                "| all µs/row |",
                "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        names = {"consumer": "Kafka → roomlist-consumer", "raw": "raw 1,000-row INSERT IGNORE"}
        for r in per:
            out.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                r.get("round", 1), names[r["system"]], r.get("stored"), r["ms"], fmt(s5_rate(r), 0),
                fmt(s5_us_per_row(r, "consumer"), 2), fmt(s5_us_per_row(r, "mysql"), 2),
                fmt(s5_us_per_row(r, "kafka"), 2), fmt(s5_us_per_row(r, "all"), 2)))
        for sysname in ("consumer", "raw"):
            m = res["persistence_medians"].get(sysname)
            if m:
                out.append("| median | %s | | | **%s** | %s | %s | %s | %s |" % (
                    names[sysname], fmt(m["rows_per_s"], 0), fmt(m["us_per_row"]["consumer"], 2),
                    fmt(m["us_per_row"]["mysql"], 2), fmt(m["us_per_row"]["kafka"], 2),
                    fmt(m["us_per_row"].get("all"), 2)))
        if res["consumer_over_raw"] is not None:
            out += ["", "consumer / raw, median of the rounds (%s): **%.2f×** (target ≥ 0.67: %s)." % (
                ", ".join("%.2f" % x for x in res["consumer_over_raw_by_round"]), res["consumer_over_raw"],
                "met" if res["persistence_target_met"] else "missed")]
        out.append("")
    if res["history"]:
        r0 = res["history"][0]
        out += ["History: REST pages of 50 (bench nginx → Redis → relay-worker → MariaDB replica), one at a "
                "time, paging back from each `before`, in a room of %s rows." % fmt(r0["rows"], 0), "",
                "| from before | pages | errors | p50 ms | p99 ms | p99.9 ms | max ms | replica disk reads |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in res["history"]:
            out.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                r["depth"], r["pages"], r["errors"], fmt(ms(r["p50_us"]), 3), fmt(ms(r["p99_us"]), 3),
                fmt(ms(r["p999_us"]), 3), fmt(ms(r["max_us"]), 3), r.get("disk_reads", "—")))
        if "warmed" in r0:
            out += ["", "Before the pages, the replica's buffer pool %s (bench/scenario_5.sh, S5_WARM); a disk "
                    "read is a 16 KB page InnoDB did not hold." % (
                        "was warmed by one scan of the room's rows, as a replica that holds the table and has "
                        "been read at every depth since its start would be" if r0["warmed"]
                        else "was left as it was, not warmed")]
        out += ["", "Path: the room's Redis log held %s entries; the replica ran %s statements during the run, "
                "the primary %s (%s). Worst p99 %s ms (target ≤ 1 ms: %s)." % (
                    r0["redis_log"], r0["replica_stmts"], r0.get("primary_stmts", "—"),
                    "every page from MySQL" if res["history_from_mysql"] else "NOT every page from MySQL",
                    fmt(ms(res["history_p99_worst_us"]), 3), "met" if res["history_target_met"] else "missed"),
                ""]
        total = [r for r in res["history"] if r["depth"] == "all" and r.get("cpu_ms")]
        if total:
            t = total[0]
            out += ["CPU per page (µs, the whole run): " + ", ".join(
                "%s %s" % (g, fmt(v * 1000.0 / t["pages"], 0)) for g, v in t["cpu_ms"].items()) + ".", ""]
            box = t.get("box")
            if box and box.get("wall_ms"):
                path = sum(t["cpu_ms"].values())
                out += ["The box while the pages ran (bench/box_cpu.py): %s of %s CPU-ms busy (%s%% of its %s "
                        "CPUs), the path's processes %s; besides them and the client: %s." % (
                            fmt(box["busy_ms"], 0), fmt(box["wall_ms"] * box["cpus"], 0),
                            fmt(100.0 * box["busy_ms"] / (box["wall_ms"] * box["cpus"]), 0), box["cpus"],
                            fmt(path, 0), ", ".join("%s %s ms" % (o["name"], o["cpu_ms"]) for o in box["others"])
                            or "nothing over a clock tick"), ""]
    return out


def report(args):
    records = []
    with open(args.records) as f:
        for ln in f:
            if ln.strip():
                records.append(json.loads(ln))
    with open(args.machine[0]) as f:
        machine = json.load(f)
    with open(args.machine[1]) as f:
        machine["loadavg_end"] = json.load(f)["loadavg_end"]
    runs = [derive(r) for r in records if r.get("scenario") == 2 and "rate" in r]
    skipped = [(r["system"], r["skipped"]) for r in records if r.get("scenario") == 2 and "skipped" in r]
    stubs = {r["scenario"]: r for r in records if r.get("status") == "not yet"}
    s3 = [derive_s3(r) for r in records if r.get("scenario") == 3 and "round" in r]
    s3_skipped = [(r["system"], r["skipped"]) for r in records if r.get("scenario") == 3 and "skipped" in r]
    s5 = [r for r in records if r.get("scenario") == 5 and "part" in r]
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mode": args.mode,
        "machine": machine,
        "scenarios": {},
    }
    if runs or skipped:
        result["scenarios"]["2"] = {"title": SCENARIOS[2], "runs": runs, "skipped": dict(skipped),
                                    "ratios": fanout_ratios(runs)}
    if s3 or s3_skipped:
        result["scenarios"]["3"] = summary_s3(s3, s3_skipped)
    if s5:
        result["scenarios"]["5"] = s5_result(s5)
    for n, r in stubs.items():
        result["scenarios"][str(n)] = {"title": SCENARIOS[n], "status": "not yet", "note": r["note"]}
    sections = {}
    for n, render in RENDER.items():
        recs = [r for r in records if r.get("scenario") == n and r.get("status") != "not yet"]
        if recs:
            result["scenarios"][str(n)], sections[n] = render(recs)

    md = ["# MiniChat benchmark (%s)" % args.mode, "",
          "Machine: %s, %d CPUs (%s), kernel %s; load average %s at the start, %s at the end. One run on a "
          "shared box: compare the systems within a row, not across runs." % (
              machine["host"], machine["nproc"], machine["model_name"], machine["kernel"],
              machine["loadavg_start"], machine["loadavg_end"]), ""]
    md += sections.get(1, [])
    if runs or skipped:
        md += fanout_tables(runs, skipped) + [""]
    if "3" in result["scenarios"]:
        md += render_s3(result["scenarios"]["3"])
    md += sections.get(4, [])
    if s5:
        md += render_s5(result["scenarios"]["5"])
    if stubs:
        md += ["## Not side by side yet", "", "| scenario | status |", "| --- | --- |"]
        for n in sorted(stubs):
            md.append("| %d. %s | not yet — %s |" % (n, SCENARIOS[n], stubs[n]["note"]))
        md.append("")
    text = "\n".join(md)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    with open(args.md, "w") as f:
        f.write(text)
    print(text)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--line")
    ap.add_argument("--records")
    ap.add_argument("--machine", nargs=2)
    ap.add_argument("--mode", default="full")
    ap.add_argument("--json")
    ap.add_argument("--md")
    args = ap.parse_args()
    if args.line:
        rec = json.loads(args.line)
        print(line_s3(rec) if rec.get("scenario") == 3 else LINE.get(rec.get("scenario"), line)(rec))
        return 0
    if not (args.records and args.machine and args.json and args.md):
        ap.error("--records, --machine, --json and --md go together")
    return report(args)


if __name__ == "__main__":
    sys.exit(main())
