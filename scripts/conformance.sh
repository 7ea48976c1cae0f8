#!/usr/bin/env bash
# Autobahn|Testsuite against the echo endpoint (`minichat_ws_echo`, served
# at /echo by both dev nodes): `make conformance` runs every case group the
# issue names, `make test` the quick ones (tests/integration/test_conformance.py).
#
#   conformance.sh [CASES]   CASES: comma-separated Autobahn case patterns
#                            (default "1.*,...,13.*", i.e. groups 1-7, 9, 10,
#                            12 and 13); the stack's node a must be running
#   conformance.sh setup     only create the Python 2.7 virtualenv
#
# The fuzzing client (PyPI autobahntestsuite, Python 2.7 only) lives in a
# virtualenv under .cache/, made once from pyenv's 2.7 with virtualenv<20.22
# (the last release that makes 2.7 environments) and re-used by later runs
# and clones that share the cache.  The report is written under the run
# directory; the script prints one line per case that did not pass, then
# "N passed, M failed", and exits 1 on any failure.  OK, NON-STRICT and
# INFORMATIONAL pass; anything else (FAILED, UNIMPLEMENTED, a missing case)
# fails.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
RUN=${MINICHAT_RUN:-$top/.run}
OFF=${MINICHAT_PORT_OFFSET:-0}
URL=${MINICHAT_ECHO_URL:-ws://127.0.0.1:$((8080 + OFF))/echo}
AB_VERSION=25.10.1
# the directory names its contents: bump the suffix when the recipe changes
venv=$top/.cache/autobahn-$AB_VERSION-1
ALL_CASES="1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*,10.*,12.*,13.*"

setup() {
    local py27
    mkdir -p "$top/.cache"
    # one maker at a time: the cache may be shared by several checkouts
    # (held while the virtualenv is checked or made, not during the run:
    # other checkouts' runs must not queue behind a 30-minute one)
    exec 9>"$top/.cache/autobahn.lock"
    flock 9
    if [ -f "$venv/.complete" ]; then
        exec 9>&-
        return
    fi
    py27=$(ls -d "$HOME"/.pyenv/versions/2.7.*/bin/python2.7 2>/dev/null | sort -V | tail -1 || true)
    if [ -z "$py27" ]; then
        echo "conformance: no Python 2.7 under ~/.pyenv/versions (pyenv install 2.7.18)" >&2
        exit 1
    fi
    echo "conformance: making the Autobahn virtualenv in $venv (once)"
    rm -rf "$venv"
    python3 -m venv "$venv/boot"
    "$venv/boot/bin/pip" install -q 'virtualenv<20.22'
    "$venv/boot/bin/virtualenv" -q -p "$py27" "$venv/py27"
    "$venv/py27/bin/pip" install -q --disable-pip-version-check "autobahntestsuite==$AB_VERSION"
    touch "$venv/.complete"
    exec 9>&-
}

if [ "${1:-}" = setup ]; then
    setup
    exit 0
fi

setup
cases=${1:-$ALL_CASES}

out=$RUN/autobahn
rm -rf "$out"
mkdir -p "$out"

python3 - "$out/spec.json" "$URL" "$cases" <<'PY'
import json, sys
path, url, cases = sys.argv[1:]
json.dump({"outdir": "./report", "servers": [{"agent": "minichat", "url": url}],
           "cases": [c.strip() for c in cases.split(",") if c.strip()],
           "exclude-cases": [], "exclude-agent-cases": {}}, open(path, "w"), indent=1)
PY

echo "conformance: Autobahn $AB_VERSION fuzzingclient, cases $cases, against $URL"
start=$(date +%s)
rc=0
(cd "$out" && "$venv/py27/bin/wstest" -m fuzzingclient -s spec.json > wstest.log 2>&1) || rc=$?
echo "conformance: wstest ran $(( $(date +%s) - start )) s (exit $rc; log $out/wstest.log)"

python3 - "$out/report/index.json" "$cases" <<'PY'
import fnmatch, json, sys
path, cases = sys.argv[1:]
PASS = {"OK", "NON-STRICT", "INFORMATIONAL"}
try:
    report = json.load(open(path)).get("minichat", {})
except (OSError, ValueError) as e:
    print("conformance: no report (%s)" % e)
    print("0 passed, 1 failed")
    sys.exit(1)
def key(case):
    return [int(x) for x in case.split(".")]
passed = failed = 0
for case in sorted(report, key=key):
    r = report[case]
    if r.get("behavior") in PASS and r.get("behaviorClose") in PASS:
        passed += 1
    else:
        failed += 1
        print("conformance: case %s: %s (close: %s)" % (case, r.get("behavior"), r.get("behaviorClose")))
# a pattern that matched no case is a failure too (the suite did not run it)
for pat in [c.strip() for c in cases.split(",") if c.strip()]:
    if not any(fnmatch.fnmatch(c, pat) for c in report):
        failed += 1
        print("conformance: no result for %s" % pat)
print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
PY
