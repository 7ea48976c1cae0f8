"""docs/metrics.md and the scrapes agree: every family its tables name is
served by its program with that type, and nothing served is missing from
the tables.

The tables are read from the page itself: the module's under "## The
metrics", the relay-worker's under "### relay-worker", the consumer's under
"### roomlist-consumer"; a row is `| \\`name\\` | type | labels | meaning |`.
All five endpoints of the dev stack are scraped (nginx a and b, relay-worker
a and b, the consumer) and parsed with test_metrics.py's strict parser.  A
family is compared by its TYPE line, which every program prints whether or
not the family has a sample yet (a peer never called, a partition not read
yet).  The label names of every sample must be the ones the table gives
(`le` of a histogram aside).

Which test shows each family moving on its event is listed in
docs/metrics.md ("Tested by").
"""

import os
import re

from conftest import TOP
from test_metrics import fetch, parse
from test_service_metrics import get

DOC = os.path.join(TOP, "docs", "metrics.md")
ROW = re.compile(r"^\| `(minichat_[a-z0-9_]+)` \| (counter|gauge|histogram) \| ([^|]*) \|")

# the doc's heading over each program's table, and the endpoints serving it
SECTIONS = {"## The metrics": "module", "### relay-worker": "relay-worker", "### roomlist-consumer": "consumer"}
ENDPOINTS = {"module": ("nginx a", "nginx b"), "relay-worker": ("relay-a", "relay-b"), "consumer": ("consumer",)}


def documented(text):
    """{program: {family: (type, frozenset of label names)}} from the page."""
    tables, program = {p: {} for p in SECTIONS.values()}, None
    for line in text.splitlines():
        if line.startswith("#"):
            program = next((p for head, p in SECTIONS.items() if line.startswith(head)), None)
            continue
        m = ROW.match(line)
        if not m:
            continue
        assert program, "a metrics row outside the three tables: %r" % line
        name, kind, labels = m.groups()
        names = frozenset(re.findall(r"`([a-z_]+)`", labels)) - {"le"}
        assert name not in tables[program], "%s twice in the %s table" % (name, program)
        tables[program][name] = (kind, names)
    return tables


def served(endpoint):
    """(series, types) of one endpoint's scrape."""
    if endpoint.startswith("nginx "):
        status, _, text = fetch(endpoint[-1])
    else:
        status, _, text = get(endpoint, "/metrics")
    assert status == 200, (endpoint, status)
    return parse(text)


def label_names(series, types):
    """{family: set of label names its samples carry, le aside}."""
    out = {}
    for (name, labels), _ in series.items():
        family = name
        if family not in types:
            family = next(name[:-len(s)] for s in ("_bucket", "_count", "_sum") if name[:-len(s)] in types)
        out.setdefault(family, set()).update(k for k, _ in labels if k != "le")
    return out


def test_the_doc_tables_are_read():
    with open(DOC) as f:
        tables = documented(f.read())
    # a guard on the reader: a table it failed to find would pass everything
    assert len(tables["module"]) >= 18 and len(tables["relay-worker"]) >= 32 and len(tables["consumer"]) >= 17, \
        {p: len(t) for p, t in tables.items()}
    assert tables["module"]["minichat_ws_closes_total"] == ("counter", frozenset({"code"}))
    assert tables["relay-worker"]["minichat_relay_build_info"] == ("gauge", frozenset({"node", "build"}))
    assert tables["consumer"]["minichat_consumer_lag_records"] == ("gauge", frozenset({"topic", "partition"}))


def test_every_documented_family_is_served_and_nothing_else():
    with open(DOC) as f:
        tables = documented(f.read())
    problems = []
    for program, endpoints in ENDPOINTS.items():
        doc = tables[program]
        for endpoint in endpoints:
            series, types = served(endpoint)
            for name, (kind, _) in sorted(doc.items()):
                if name not in types:
                    problems.append("%s: documented, not served: %s" % (endpoint, name))
                elif types[name] != kind:
                    problems.append("%s: %s is a %s, documented as a %s" % (endpoint, name, types[name], kind))
            for name in sorted(set(types) - set(doc)):
                problems.append("%s: served, not in the %s table of docs/metrics.md: %s" % (endpoint, program, name))
            for name, labels in sorted(label_names(series, types).items()):
                if name in doc and labels != doc[name][1]:
                    problems.append("%s: %s has labels %s, documented %s"
                                    % (endpoint, name, sorted(labels), sorted(doc[name][1])))
    assert not problems, "\n".join(problems)


def test_every_family_has_a_tested_by_row_naming_real_tests():
    """The page's "Tested by" table names every family of the three tables
    once, and every test it names exists in the file it names."""
    with open(DOC) as f:
        text = f.read()
    tables = documented(text)
    tested, problems = {}, []
    rows = text.split("## Tested by", 1)[1].split("\n## ", 1)[0]
    here = os.path.dirname(os.path.abspath(__file__))
    for line in rows.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != 3 or cells[0] not in ENDPOINTS:
            continue
        for name in re.findall(r"`(minichat_[a-z0-9_]+)`", cells[1]):
            if name in tested.setdefault(cells[0], set()):
                problems.append("%s twice" % name)
            tested[cells[0]].add(name)
        path = None
        for path_, test in re.findall(r"(test_[a-z0-9_]+\.py)?::(test_[a-z0-9_]+)", cells[2]):
            path = path_ or path
            with open(os.path.join(here, path)) as f:
                if not re.search(r"^(async )?def %s\(" % test, f.read(), re.M):
                    problems.append("%s::%s does not exist" % (path, test))
    for program, doc in tables.items():
        for name in sorted(set(doc) - tested.get(program, set())):
            problems.append("%s: %s has no row in \"Tested by\"" % (program, name))
        for name in sorted(tested.get(program, set()) - set(doc)):
            problems.append("%s: %s in \"Tested by\" is in no table" % (program, name))
    assert not problems, "\n".join(problems)
