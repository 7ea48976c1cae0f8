#!/usr/bin/env python3
"""The report of bench/bench.sh: its records in, one table out.

  report.py --line RECORD_JSON
      one progress line for a finished run
  report.py --records F --machine START END --mode full|smoke --json OUT --md OUT
      prints the Markdown report and writes it to OUT.md, with everything
      measured in OUT.json

Records are JSON objects, one a line, as bench.sh writes them: a fan-out
run (scenario 2) has system, rate, offered, delivered, deliveries_per_s,
p50_us, p99_us and cpu_ms per group of processes; a scenario not measured
yet has status "not yet" and a note.  CPU per million deliveries is CPU
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


def fanout_tables(runs, skipped):
    rates = sorted({r["rate"] for r in runs})
    present = [s for s in SYSTEMS if any(r["system"] == s for r in runs)]
    out = ["## Scenario 2 — %s" % SCENARIOS[2], ""]
    by = {(r["system"], r["rate"]): r for r in runs}
    if runs:
        r0 = runs[0]
        out.append("%d members + the sender, %d messages per step; CPU of every process on the path "
                   "(MiniChat: bench nginx workers, relay-worker, Redis, Kafka, roomlist-consumer, MariaDB "
                   "primary; floor and Centrifugo: their one process), from all connected to the end of the run."
                   % (r0["members"], r0["messages"]))
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
    """Per rate, MiniChat's figures over the floor's and Centrifugo's."""
    by = {(r["system"], r["rate"]): r for r in runs}
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


S5_TARGET_RATIO = 2.0 / 3.0   # the brief: persistence >= 2/3 of the raw insert
S5_TARGET_P99_US = 1000       # the brief: a history page p99 <= 1 ms at any depth
S5_CPU_GROUPS = ("consumer", "mysql", "kafka")


def s5_rate(r):
    """Rows per second of a persistence record, or None."""
    return r["rows"] * 1000.0 / r["ms"] if r.get("ms") else None


def s5_us_per_row(r, group):
    """CPU microseconds of a group of processes per row stored, or None."""
    cpu = (r.get("cpu_ms") or {}).get(group)
    return None if cpu is None or not r.get("rows") else cpu * 1000.0 / r["rows"]


def line_s5(r):
    if r["part"] == "persist":
        return ("persistence %s: %s of %s rows in %s ms, %s rows/s; CPU us per row: %s" % (
            r["system"], r.get("stored"), r["rows"], r["ms"], fmt(s5_rate(r), 0),
            ", ".join("%s %s" % (g, fmt(s5_us_per_row(r, g), 2)) for g in S5_CPU_GROUPS
                      if g in (r.get("cpu_ms") or {}))))
    return ("history at before=%s of %s rows: %s pages, %s errors, p50 %s ms p99 %s ms p99.9 %s ms; "
            "replica statements %s, Redis log %s entries" % (
                r["depth"], fmt(r["rows"], 0), r["pages"], r["errors"], fmt(ms(r["p50_us"]), 3),
                fmt(ms(r["p99_us"]), 3), fmt(ms(r["p999_us"]), 3), r["replica_stmts"], r["redis_log"]))


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2.0


def s5_result(recs):
    """Scenario 5's JSON: the records, the medians, the ratio and the targets met."""
    per = [r for r in recs if r["part"] == "persist"]
    hist = [r for r in recs if r["part"] == "history"]
    med = {}
    for sysname in ("consumer", "raw"):
        runs = [r for r in per if r["system"] == sysname]
        if runs:
            med[sysname] = {"rows_per_s": median(s5_rate(r) for r in runs), "runs": len(runs),
                            "us_per_row": {g: median(s5_us_per_row(r, g) for r in runs) for g in S5_CPU_GROUPS}}
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
            "history_target_met": None if worst is None else worst <= S5_TARGET_P99_US,
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
                "on, ROW, replicated), from the first produce (or statement) to the last row stored, in %d "
                "round(s), each the consumer then the raw insert; CPU in µs per row."
                % (r0["rows"], r0["body_bytes"], r0["rooms"], len({r.get("round", 1) for r in per})), "",
                "| round | writer | rows stored | ms | rows/s | consumer µs/row | MariaDB µs/row | Kafka µs/row |",
                "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        names = {"consumer": "Kafka → roomlist-consumer", "raw": "raw 1,000-row INSERT IGNORE"}
        for r in per:
            out.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                r.get("round", 1), names[r["system"]], r.get("stored"), r["ms"], fmt(s5_rate(r), 0),
                fmt(s5_us_per_row(r, "consumer"), 2), fmt(s5_us_per_row(r, "mysql"), 2),
                fmt(s5_us_per_row(r, "kafka"), 2)))
        for sysname in ("consumer", "raw"):
            m = res["persistence_medians"].get(sysname)
            if m:
                out.append("| median | %s | | | **%s** | %s | %s | %s |" % (
                    names[sysname], fmt(m["rows_per_s"], 0), fmt(m["us_per_row"]["consumer"], 2),
                    fmt(m["us_per_row"]["mysql"], 2), fmt(m["us_per_row"]["kafka"], 2)))
        if res["consumer_over_raw"] is not None:
            out += ["", "consumer / raw, median of the rounds (%s): **%.2f×** (target ≥ 0.67: %s)." % (
                ", ".join("%.2f" % x for x in res["consumer_over_raw_by_round"]), res["consumer_over_raw"],
                "met" if res["persistence_target_met"] else "missed")]
        out.append("")
    if res["history"]:
        r0 = res["history"][0]
        out += ["History: REST pages of 50 (bench nginx → Redis → relay-worker → MariaDB replica), one at a "
                "time, paging back from each `before`, in a room of %s rows." % fmt(r0["rows"], 0), "",
                "| from before | pages | errors | p50 ms | p99 ms | p99.9 ms | max ms |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in res["history"]:
            out.append("| %s | %s | %s | %s | %s | %s | %s |" % (
                r["depth"], r["pages"], r["errors"], fmt(ms(r["p50_us"]), 3), fmt(ms(r["p99_us"]), 3),
                fmt(ms(r["p999_us"]), 3), fmt(ms(r["max_us"]), 3)))
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
    if s5:
        result["scenarios"]["5"] = s5_result(s5)
    for n, r in stubs.items():
        result["scenarios"][str(n)] = {"title": SCENARIOS[n], "status": "not yet", "note": r["note"]}

    md = ["# MiniChat benchmark (%s)" % args.mode, "",
          "Machine: %s, %d CPUs (%s), kernel %s; load average %s at the start, %s at the end. One run on a "
          "shared box: compare the systems within a row, not across runs." % (
              machine["host"], machine["nproc"], machine["model_name"], machine["kernel"],
              machine["loadavg_start"], machine["loadavg_end"]), ""]
    if runs or skipped:
        md += fanout_tables(runs, skipped) + [""]
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
        print(line(json.loads(args.line)))
        return 0
    if not (args.records and args.machine and args.json and args.md):
        ap.error("--records, --machine, --json and --md go together")
    return report(args)


if __name__ == "__main__":
    sys.exit(main())
