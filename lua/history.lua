-- history.lua: one page of a room's history, newest first, from the recent
-- log when the log holds the whole page; and the members' read pointers for
-- the per-message unread counts.
--
-- A former member (in `left`) may read up to its leave and no further.  The
-- page is seqs [lo, before) with lo = max(1, before - limit); seqs are dense,
-- so the log covers the page exactly when it returns before - lo entries.
--
--input: keys: [{r:<room>}:members, {r:<room>}:seq, {r:<room>}:left, {r:<room>}:log, {r:<room>}:read,
--              {r:<room>}:epoch]
--       values: [user, before (0 = after the newest), limit]
--output: {1, last_seq, epoch, before, covered, n, pointer * n, entry ...}
--            before is clamped to last_seq + 1 (or the leave + 1); pointer * n are the current
--            members' read pointers (0 when none); the entries (msg JSON, newest first) only
--            when covered is 1
--        {-1}  not a member, nor a former one
--        {-2}  the room is not loaded
local members, seqk, leftk, logk, readk, epochk = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local user, before, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])

local last = redis.call('GET', seqk)
if not last then
    return {-2}
end
last = tonumber(last)

local cap = last
if redis.call('SISMEMBER', members, user) == 0 then
    local left = redis.call('HGET', leftk, user)
    if not left then
        return {-1}
    end
    left = tonumber(left)
    if left < cap then
        cap = left
    end
end

if before == 0 or before > cap + 1 then
    before = cap + 1
end
local lo = before - limit
if lo < 1 then
    lo = 1
end

local entries = {}
if before > lo then
    entries = redis.call('ZREVRANGEBYSCORE', logk, before - 1, lo)
end
local covered = (#entries == before - lo) and 1 or 0

local r = {1, last, redis.call('GET', epochk) or '', before, covered}
local ms = redis.call('SMEMBERS', members)
r[#r + 1] = #ms
for _, m in ipairs(ms) do
    r[#r + 1] = tonumber(redis.call('HGET', readk, m) or '0')
end
if covered == 1 then
    for _, e in ipairs(entries) do
        r[#r + 1] = e
    end
end
return r
