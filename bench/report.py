#!/usr/bin/env python3
"""The report of bench/bench.sh: its records in, one table out.

  report.py --line RECORD_JSON
      one progress line for a finished run
  report.py --records F --machine START END --mode full|smoke --json OUT --md OUT
      prints the Markdown report and writes it to OUT.md, with everything
      measured in OUT.json

Records are JSON objects, one a line, as bench.sh writes them: a fan-out
run (scenario 2) has system, rate, offered, delivered, deliveries_per_s,
p50_us, p99_us and cpu_ms per group of processes; a cross-node run
(scenario 3) has system, round, p50_us, p99_us, p999_us, max_us and cpu_ms,
and the table shows the median of the rounds (render_s3); a scenario not
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


# --- scenario 3: cross-node latency -----------------------------------------

S3_SYSTEMS = ("minichat", "centrifugo")
S3_TARGET_P99_US = 1000  # the brief's cross-node p99 at 1k msg/s
# the processes in the order a message meets them
S3_PATH_ORDER = ("nginx-a", "redis", "relay-a", "kafka", "relay-b", "nginx-b", "consumer", "mysql",
                 "centrifugo-1", "centrifugo-2")


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
            "%s CPU us per message" % (
                NAMES[r["system"]], r["round"], r.get("delivered"), r.get("offered"),
                "PASS" if r.get("pass") else "FAIL", fmt(ms(r.get("p50_us")), 3), fmt(ms(r.get("p99_us")), 3),
                fmt(ms(r.get("p999_us")), 3), fmt(ms(r.get("max_us")), 3), fmt(r["cpu_us_per_msg_path"], 1)))


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
            "cpu_us_per_msg_path": median(r["cpu_us_per_msg_path"] for r in rs),
            "cpu_us_per_msg_by_process": {g: median(r["cpu_us_per_msg_by_process"].get(g) for r in rs)
                                          for g in groups},
        }
    mc, cf = out.get("minichat"), out.get("centrifugo")
    ratios = None
    if mc and cf:
        ratios = {k: ratio(mc[k], cf[k]) for k in ("p50_us", "p99_us", "p999_us", "max_us", "cpu_us_per_msg_path")}
    return {"title": SCENARIOS[3], "runs": runs, "skipped": dict(skipped), "medians": out,
            "minichat_over_centrifugo": ratios, "target_p99_us": S3_TARGET_P99_US}


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
        p99 = med["minichat"]["p99_us"]
        out += ["Target (product brief): cross-node p99 ≤ 1 ms at 1k msg/s — MiniChat's median p99 %s ms: %s."
                % (fmt(ms(p99), 3), "met" if p99 <= S3_TARGET_P99_US else "not met"), ""]
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
    for n, r in stubs.items():
        result["scenarios"][str(n)] = {"title": SCENARIOS[n], "status": "not yet", "note": r["note"]}

    md = ["# MiniChat benchmark (%s)" % args.mode, "",
          "Machine: %s, %d CPUs (%s), kernel %s; load average %s at the start, %s at the end. One run on a "
          "shared box: compare the systems within a row, not across runs." % (
              machine["host"], machine["nproc"], machine["model_name"], machine["kernel"],
              machine["loadavg_start"], machine["loadavg_end"]), ""]
    if runs or skipped:
        md += fanout_tables(runs, skipped) + [""]
    if "3" in result["scenarios"]:
        md += render_s3(result["scenarios"]["3"])
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
        r = json.loads(args.line)
        print(line_s3(r) if r.get("scenario") == 3 else line(r))
        return 0
    if not (args.records and args.machine and args.json and args.md):
        ap.error("--records, --machine, --json and --md go together")
    return report(args)


if __name__ == "__main__":
    sys.exit(main())
