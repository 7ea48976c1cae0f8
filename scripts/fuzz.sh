#!/usr/bin/env bash
# Runs the libFuzzer targets that `make fuzz-build` made (see fuzz/README.md).
#
#   fuzz.sh seeds BINDIR TARGET...   each target once over every file of its
#                                    seed corpus, fuzz/corpus/<target>/ (the
#                                    cheap regression pass of `make test`)
#   fuzz.sh run BINDIR TARGET...     each target for FUZZ_SECONDS (default 30)
#                                    of fuzzing, starting from its seeds
#
# The committed seed corpora are never written to: a run keeps what it finds
# in build/fuzz/corpus/<target>/, and a crashing input in
# build/fuzz/artifacts/ (copy it into tests/unit as a test, then fix).
# Exits non-zero on the first target that crashes, leaks, trips a sanitizer
# or times out on one input.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
mode=${1:?usage: fuzz.sh seeds|run BINDIR TARGET...}
bindir=${2:?usage: fuzz.sh seeds|run BINDIR TARGET...}
shift 2
seconds=${FUZZ_SECONDS:-30}
work=$top/build/fuzz
passed=0
failed=0

mkdir -p "$work/artifacts"

for t in "$@"; do
    bin=$bindir/$t
    seeds=$top/fuzz/corpus/$t
    if [ ! -x "$bin" ]; then
        echo "fuzz: $bin is not built (make fuzz-build)" >&2
        exit 1
    fi
    if [ ! -d "$seeds" ] || [ -z "$(ls -A "$seeds")" ]; then
        echo "fuzz: $t has no seed corpus in fuzz/corpus/$t" >&2
        exit 1
    fi
    log=$work/$t.log
    case $mode in
    seeds)
        # given files (not a directory), libFuzzer runs each input once
        mapfile -t files < <(find "$seeds" -type f | sort)
        echo "== fuzz $t: ${#files[@]} seed inputs"
        rc=0
        "$bin" -timeout=25 -artifact_prefix="$work/artifacts/$t-" "${files[@]}" > "$log" 2>&1 || rc=$?
        ;;
    run)
        mkdir -p "$work/corpus/$t"
        echo "== fuzz $t: ${seconds}s"
        rc=0
        "$bin" -max_total_time="$seconds" -timeout=25 -rss_limit_mb=2048 -print_final_stats=1 \
            -artifact_prefix="$work/artifacts/$t-" "$work/corpus/$t" "$seeds" > "$log" 2>&1 || rc=$?
        grep -E '^stat::(number_of_executed_units|new_units_added):' "$log" | sed 's/^/   /' || true
        ;;
    *)
        echo "fuzz: unknown mode $mode" >&2
        exit 2
        ;;
    esac
    if [ $rc != 0 ]; then
        failed=$((failed + 1))
        echo "fuzz: $t FAILED (exit $rc); the end of $log:" >&2
        tail -40 "$log" >&2
        ls -1 "$work/artifacts/$t-"* 2>/dev/null | sed 's/^/   crashing input: /' >&2 || true
        break
    fi
    passed=$((passed + 1))
done

echo "fuzz ($mode): $passed targets passed, $failed failed"
[ $failed = 0 ]
