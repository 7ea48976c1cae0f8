/*
 * MySQL/MariaDB date-time text as milliseconds since the epoch.
 *
 * A TIMESTAMP column selected as it is comes back from libmariadb as
 * "YYYY-MM-DD HH:MM:SS" with up to six fraction digits after a '.', in the
 * session's time zone, which mc_db_open() pins to UTC.  Converting that
 * text here costs the relay-worker a few hundred nanoseconds a row, where
 * `CAST(ROUND(UNIX_TIMESTAMP(created_at) * 1000) AS UNSIGNED)` cost the
 * replica DECIMAL arithmetic on every row of every history page
 * (docs/performance.md, "History pages: CPU per page ...").
 */
#ifndef MINICHAT_SQLTIME_H
#define MINICHAT_SQLTIME_H

#include <stddef.h>
#include <stdint.h>

/* Parses s[0..n) as a UTC date-time from 1970-01-01 to 9999-12-31 into
 * milliseconds, rounded half up from the fourth fraction digit as ROUND()
 * did.  MySQL's zero date ("0000-00-00 00:00:00", any fraction) is 0, as
 * UNIX_TIMESTAMP() gives for it.  Returns 0, or -1 (and *ms untouched) for
 * anything else: another shape, a day the month does not have, a time
 * before the epoch. */
int mc_sqltime_ms(const char *s, size_t n, uint64_t *ms);

#endif
