#!/usr/bin/env bash
# Fails (exit 1) when an nginx error log of the stack holds an [alert],
# [crit] or [emerg] line, or a sanitizer report; prints those lines.  Run it
# after `stack.sh stop`: a graceful quit that leaves a socket open logs
# "open socket #N left in connection" at [alert].
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
RUN=${MINICHAT_RUN:-$top/.run}
pattern='\[(alert|crit|emerg)\]|AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:'

shopt -s nullglob
logs=("$RUN"/nginx-*/error.log)
if [ ${#logs[@]} -eq 0 ]; then
    echo "check-logs: OK (no nginx error logs under $RUN)"
    exit 0
fi
bad=0
for f in "${logs[@]}"; do
    if grep -Eq "$pattern" "$f"; then
        echo "check-logs: $f:"
        grep -En "$pattern" "$f" | head -n 50
        bad=1
    fi
done
# The services are plain C programs: only sanitizer reports count there.
san='AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:'
# .prev too: a restart moves the last run's log (and a report written at
# its exit) there
for f in "$RUN"/relay-*/relay.log "$RUN"/relay-*/relay.log.prev "$RUN"/consumer/consumer.log \
    "$RUN"/consumer/consumer.log.prev; do
    [ -f "$f" ] || continue
    if grep -Eq "$san" "$f"; then
        echo "check-logs: $f:"
        grep -En "$san" "$f" | head -n 50
        bad=1
    fi
done
if [ $bad = 1 ]; then
    echo "check-logs: FAILED" >&2
    exit 1
fi
echo "check-logs: OK (${#logs[@]} nginx error logs clean)"
