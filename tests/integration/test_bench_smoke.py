"""make bench's smoke mode (bench/bench.sh --smoke) against the running stack.

The tool must keep working: it runs scenario 1 (idle connections) tiny --
50 connections held 2 s -- and scenario 2 (fan-out) tiny -- 20 members, 10
messages -- against MiniChat (a bench nginx with node a's configuration)
and the floor (build/bin/floor), and scenario 3 (cross-node latency) tiny
-- 100 messages at 100/s from node a to node b -- against MiniChat alone (a
second bench nginx with node b's configuration), prints the side-by-side
tables and writes the JSON and Markdown report.  Checked here: the report's
shape, that every idle connection opened and stayed open and every offered
delivery was delivered, that the floor is n/a in scenario 3, and that the
bench nginx logged nothing alarming.  No number is judged: the rates
and CPU figures of a smoke run on a shared box mean nothing.
"""

import glob
import json
import os
import re
import subprocess

import pytest

from conftest import RUN, TLS, TOP

# the load generator speaks ws:// only; make test's plain pass runs this
pytestmark = pytest.mark.skipif(TLS, reason="bench/loadgen speaks ws:// only")

MEMBERS, MESSAGES = 20, 10
IDLE = 50


def test_smoke_run_reports_every_delivery(tmp_path):
    p = subprocess.run(["bash", os.path.join(TOP, "bench", "bench.sh"), "--smoke", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    # progress while it runs, then the table with both systems and their ratio
    assert re.search(r"^bench: \[1/2\] fan-out minichat", out, re.M), out
    assert re.search(r"^bench: \[2/2\] fan-out floor", out, re.M), out
    assert re.search(r"^\| msg/s \| \| MiniChat \| floor \| MiniChat/floor \|$", out, re.M), out
    assert re.search(r"^\| 20 \| delivered / offered \| 200 / 200 \| 200 / 200 \|", out, re.M), out
    assert re.search(r"^bench: \[1/2\] idle minichat: %d connections" % IDLE, out, re.M), out
    assert re.search(r"^\| open of asked \(pass\) \| %d of %d \(PASS\) \| %d of %d \(PASS\) \|" % ((IDLE,) * 4),
                     out, re.M), out

    reports = glob.glob(str(tmp_path / "*-smoke.json"))
    assert len(reports) == 1, reports
    assert os.path.exists(reports[0][:-len(".json")] + ".md")
    with open(reports[0]) as f:
        r = json.load(f)
    assert r["mode"] == "smoke"
    m = r["machine"]
    for key in ("host", "nproc", "model_name", "kernel", "loadavg_start", "loadavg_end"):
        assert key in m, (key, m)
    assert m["nproc"] >= 1
    runs = r["scenarios"]["2"]["runs"]
    assert sorted(x["system"] for x in runs) == ["floor", "minichat"], runs
    for x in runs:
        assert x["pass"] is True, x
        assert x["sent"] == x["acked"] == MESSAGES, x
        assert x["offered"] == x["delivered"] == MEMBERS * MESSAGES, x
        assert x["out_of_order"] == 0, x
        for key in ("deliveries_per_s", "p50_us", "p99_us", "cpu_ms", "cpu_s_per_m_path", "cpu_s_per_m_front"):
            assert key in x, (key, x)
        assert 0 < x["p50_us"] <= x["p99_us"], x
    idle = r["scenarios"]["1"]["runs"]
    assert sorted(x["system"] for x in idle) == ["floor", "minichat"], idle
    for x in idle:
        assert x["pass"] is True, x
        assert x["open"] == x["conns"] == IDLE and x["failed"] == 0 and x["closed"] == 0, x
        assert x["pss_before_kb"] > 0 and x["pss_after_kb"] > 0 and "pss_per_conn_bytes" in x, x
    assert {x["measured"] for x in idle} == {"nginx", "floor"}, idle
    mc = next(x for x in runs if x["system"] == "minichat")
    # every process on MiniChat's path was found and measured
    assert {"nginx", "relay", "redis", "kafka", "consumer", "mysql"} <= set(mc["cpu_ms"]), mc["cpu_ms"]
    fl = next(x for x in runs if x["system"] == "floor")
    assert set(fl["cpu_ms"]) == {"floor"}, fl["cpu_ms"]

    # scenario 3: the sender on node a's bench nginx, the member on node b's
    assert re.search(r"^bench: \[1/1\] cross-node minichat: 100 messages at 100/s", out, re.M), out
    assert re.search(r"^\| delivered / offered \| 100 / 100 \| n/a \|$", out, re.M), out
    s3 = r["scenarios"]["3"]
    assert "no second node" in s3["skipped"]["floor"], s3["skipped"]
    assert [x["system"] for x in s3["runs"]] == ["minichat"], s3["runs"]
    x = s3["runs"][0]
    assert x["pass"] is True and x["sent"] == x["acked"] == x["offered"] == x["delivered"] == 100, x
    assert 0 < x["p50_us"] <= x["p99_us"] <= x["p999_us"] <= x["max_us"], x
    assert {"nginx-a", "nginx-b", "relay-a", "relay-b", "redis", "kafka"} <= set(x["cpu_ms"]), x["cpu_ms"]

    # the bench nginx quit cleanly (the harness's check-logs.sh sees only the nodes' logs)
    for node in ("nginx", "nginx-b"):
        with open(os.path.join(RUN, "bench", node, "error.log")) as f:
            bad = [ln for ln in f if re.search(r"\[(alert|crit|emerg)\]", ln)]
        assert not bad, (node, bad)
