#!/usr/bin/env bash
# thread_cpu.sh PID [SECONDS] [TOP]: the CPU time each thread of PID spent
# over SECONDS (default 60), summed by thread name with the digits replaced
# by "#" (so that Kafka's request-handler-0..3 make one row), the TOP
# (default 20) largest rows in ms with their thread counts, then the
# process's total in ms and in cores.  Reads /proc/PID/task/*/stat before
# and after; a thread born or gone in between counts only what it spent
# while both reads saw it.
#
# The kernel keeps 15 characters of a thread's name; for a JVM (when `jcmd`
# is installed and may attach) the full names come from a thread dump taken
# first, so that Kafka's network threads and request handlers are told
# apart.  Used for Kafka's JVM (docs/performance.md, "Kafka's share");
# works for any process.
set -euo pipefail
pid=${1:?usage: thread_cpu.sh PID [SECONDS] [TOP]}
secs=${2:-60}
top=${3:-20}
[ -d "/proc/$pid" ] || { echo "thread_cpu: no process $pid" >&2; exit 1; }
tck=$(getconf CLK_TCK)
a=$(mktemp); b=$(mktemp); names=$(mktemp)
trap 'rm -f "$a" "$b" "$names"' EXIT

# names: "tid<TAB>full name" of a JVM's threads (a dump's nid is the tid).
# Only a JVM is asked: jcmd attaches by sending SIGQUIT, which ends any
# other process (it stopped Redis in the middle of a benchmark run).
is_jvm() { [ -r "/proc/$pid/maps" ] && grep -q 'libjvm\.so' "/proc/$pid/maps"; }
if command -v jcmd > /dev/null && is_jvm && jcmd "$pid" Thread.print > "$names" 2> /dev/null; then
    sed -nE 's/^"([^"]*)".* nid=(0x[0-9a-f]+).*/\2\t\1/p' "$names" \
        | while IFS=$'\t' read -r nid name; do printf '%d\t%s\n' "$nid" "$name"; done > "$names.tmp"
    mv -f "$names.tmp" "$names"
else
    : > "$names"
fi

# snap: "tid<TAB>kernel name<TAB>ticks" per thread (utime + stime; the name
# is between the first "(" and the last ")", and may hold spaces).
snap() {
    local f s name rest tid
    for f in /proc/"$pid"/task/*/stat; do
        s=$(cat "$f" 2> /dev/null) || continue
        tid=${f%/stat}; tid=${tid##*/}
        name=${s#*(}; name=${name%)*}
        rest=${s##*) }
        # shellcheck disable=SC2086
        set -- $rest
        printf '%s\t%s\t%s\n' "$tid" "$name" $((${12} + ${13}))
    done
}

snap > "$a"
sleep "$secs"
snap > "$b"
awk -F'\t' -v tck="$tck" -v secs="$secs" -v top="$top" '
    FILENAME == ARGV[1] { full[$1] = $2; next }
    FILENAME == ARGV[2] { t0[$1] = $3; next }
    ($1 in t0) {
        n = ($1 in full) ? full[$1] : $2
        gsub(/[0-9]+/, "#", n)
        ms[n] += ($3 - t0[$1]) * 1000 / tck; cnt[n]++
    }
    END {
        sort = "sort -rn | head -n " top
        for (n in ms) { total += ms[n]; printf "%10.0f ms  %3d  %s\n", ms[n], cnt[n], n | sort }
        close(sort)
        printf "%10.0f ms  total over %s s = %.3f cores\n", total, secs, total / 1000 / secs
    }' "$names" "$a" "$b"
