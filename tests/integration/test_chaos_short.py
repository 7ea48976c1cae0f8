"""The short chaos run of `make test` (the full one is `make chaos`,
tests/chaos/chaos.py; docs/chaos.md): under steady sends on both nodes,
the faults that pass today, each followed by a check that MySQL holds
exactly the acked messages (none lost, none duplicated, no hole) and that
both listeners hold every stored message in order."""

import asyncio
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "chaos"))

import audit  # noqa: E402
import chaos  # noqa: E402
import faults  # noqa: E402

# Left out here, in `make chaos` only (docs/chaos.md): the nginx worker
# kill (its master logs the death at [alert], which fails
# scripts/check-logs.sh); and what fails today: the relay link cut (a
# later resume does not replay a live gap), a Kafka restart (the consumer
# stopped persisting after one in one run of three), and the client that
# never retries (an admitted message never acked stays a hole).
SHORT = [faults.KillRelay("a"), faults.KillRelay("b"), faults.KillConsumer(), faults.ReplicaLag(hold=3.0)]


def test_chaos_short():
    r = asyncio.run(asyncio.wait_for(chaos.run(SHORT, rooms=2, rate=4.0, settle=2.0, warmup=2.0), 300))
    report = audit.table(r.results) + "\n" + "\n".join(d for x in r.results for d in x.details)
    assert len(r.results) == len(SHORT) + 2, report
    assert not r.failed(), report
    # the traffic really ran through every fault
    assert r.results[-1].acked == r.results[-1].sends > 10 * len(SHORT), report
