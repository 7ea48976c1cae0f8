-- send.lua: admits one chat message into a room.
--
-- Checks that the room is loaded and the sender a member, deduplicates on
-- (sender, cid), assigns the room's next dense seq, appends the message to
-- the room's recent log (the `msg` frame's JSON) and moves the sender's own
-- read pointer to it.  Every key shares the room's hashtag, so the script
-- runs on one cluster slot.  User ids stay strings: Lua numbers are doubles
-- and would round ids past 2^53.
--
-- Remembered cids live in time buckets of idem_ttl ({r:<room>}:idem:<n>,
-- n = ts / idem_ttl): a lookup checks the current and the previous bucket,
-- a new cid goes into the current one, which expires 2 * idem_ttl later.
-- So a cid is remembered for at least idem_ttl, and memory is bounded by
-- the cids of the last two buckets.
--
-- The room's message rate limit rides here (GCRA on {r:<room>}:rl, as
-- gcra.lua; interval_us 0: none), after the cid check, so a retried send is
-- answered whatever the rate, and before the seq, so a refused send spends
-- nothing.
--
-- The room's generation ({r:<room>}:gen) is the replication id of the master
-- that loaded or last revalidated the room; replid is the id of the master
-- this script runs on, as the module learnt it (INFO replication; never
-- asked here, which would cost a third of the script's rate).  They differ
-- after a failover or a restart, when this master may lack seqs that were
-- already acked: the script then changes nothing and answers -4, and the
-- module revalidates the room against MySQL (load.lua) before it retries.
--
-- The recent log is capped twice: at most log_max entries and at most
-- log_bytes bytes of entries (the sum of their lengths, kept in
-- {r:<room>}:logbytes next to the log).  The oldest entries go first, so
-- the log always holds the newest seqs without a hole, and the newest entry
-- stays even when it alone is larger than log_bytes.  A log found empty
-- (rebuilt, or deleted by hand) starts its total at 0; a log with no total
-- (written before the total existed) has it counted once from its entries.
--
-- A new message is also noted as not yet known durable: "<room>:<seq>" in
-- the pending index of the room's slot ({<roomtag>}:pend, a sorted set by
-- ts_ms; the tag hashes to the room's slot, see redis_slot.h).  The module
-- takes it out once the relay-worker says Kafka has the message; what
-- stays there too long, its sweeper publishes again from the recent log.
--
-- after (ChatMessage.after_ms): the newest log entry is the previous seq
-- (the log keeps the newest seqs without a hole), and its JSON ends with
-- its ts; the relay-workers' reorderers hold the first message of a room
-- they have no position for only as long as a lower seq may still come,
-- and not at all after a quiet spell (lib/include/minichat/reorder.h).
--
-- The members to deliver to: the room's members version ({r:<room>}:mver,
-- changed by load.lua, join.lua and leave.lua whenever the member set
-- changes) is answered every time, the members themselves (one string: a
-- room of 1,000 costs one reply element, not 1,000) only when mver is not
-- the version the caller holds (held_mver; empty: none held).  See
-- ngx_http_minichat_members.c.
--
--input: keys: [{r:<room>}:members, {r:<room>}:seq, {r:<room>}:idem:<n>, {r:<room>}:idem:<n-1>,
--              {r:<room>}:log, {r:<room>}:read, {r:<room>}:rl, {r:<room>}:gen, {r:<room>}:logbytes,
--              {<roomtag>}:pend, {r:<room>}:mver]
--       values: [sender, cid, body, ts_ms, log_max, idem_ttl_seconds, room, kind, interval_us, burst,
--                log_bytes, held_mver, replid]
--               (sender, ts_ms and room are decimal digits; kind is "text" or "system";
--               sender 0 with kind "system": the server API, not a member, no read pointer)
--output: {1, seq, ts, after, mver[, "m1,m2,..."]}
--                                            a new message; after: ms from the previous seq's ts to
--                                            this ts (0: not known: no previous entry in the log, or a
--                                            clock behind it); the members version, and the members
--                                            to deliver to when mver is not held_mver ("" when the
--                                            room has no version: the members always follow)
--        {2, seq, ts, 0, mver[, "m1,m2,..."]}
--                                            the same (sender, cid) was admitted before: its seq and
--                                            ts, and the members now (a retry is published again to
--                                            them)
--        {-1}                                the sender is not a member of the room (nor sender 0
--                                            with kind "system")
--        {-2}                                the room is not loaded (rebuild it from MySQL, then retry)
--        {-3, retry_after_ms}                refused by the room's rate limit
--        {-4}                                the room's generation is not this master's (revalidate, then retry)
local members, seqk, idem, idem_prev, logk, readk = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local rl, genk, bytesk, pendk, mverk = KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11]
local sender, cid, body, ts = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local log_max, idem_ttl = tonumber(ARGV[5]), tonumber(ARGV[6])
local room, kind = ARGV[7], ARGV[8]
local interval, burst = tonumber(ARGV[9]), tonumber(ARGV[10])
local log_bytes = tonumber(ARGV[11])
local held, replid = ARGV[12], ARGV[13]

-- appends the members version to r, and the members unless held
local function with_members(r)
    local ver = redis.call('GET', mverk)
    r[#r + 1] = ver or ''
    if not ver or ver ~= held then
        r[#r + 1] = table.concat(redis.call('SMEMBERS', members), ',')
    end
    return r
end

if redis.call('EXISTS', seqk) == 0 then
    return {-2}
end

if redis.call('GET', genk) ~= replid then
    return {-4}
end

-- sender 0 is the app's backend (the server API), a member of no room:
-- its system messages go to the members as they are
local backend = kind == 'system' and sender == '0'
if not backend and redis.call('SISMEMBER', members, sender) == 0 then
    return {-1}
end

local field = sender .. ':' .. cid
local prev = redis.call('HGET', idem, field) or redis.call('HGET', idem_prev, field)
if prev then
    -- a retry: published again as a repair, to the members as they are now
    local sep = string.find(prev, ':', 1, true)
    return with_members({2, tonumber(string.sub(prev, 1, sep - 1)), tonumber(string.sub(prev, sep + 1)), 0})
end

if interval > 0 then
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
    local tat = tonumber(redis.call('GET', rl) or '0')
    if tat < now then
        tat = now
    end
    local nxt = tat + interval
    local over = nxt - now - (burst + 1) * interval
    if over > 0 then
        return {-3, math.ceil(over / 1000)}
    end
    redis.call('SET', rl, string.format('%.0f', nxt), 'PX', math.ceil((nxt - now) / 1000) + 1)
end

local seq = redis.call('INCR', seqk)
redis.call('HSET', idem, field, seq .. ':' .. ts)
redis.call('EXPIRE', idem, 2 * idem_ttl)

local entry = '{"op":"msg","room":' .. room .. ',"seq":' .. seq .. ',"from":' .. sender
    .. ',"cid":' .. cjson.encode(cid) .. ',"body":' .. cjson.encode(body) .. ',"ts":' .. ts
if kind == 'system' then
    entry = entry .. ',"kind":"system"'
end
entry = entry .. '}'

local n = redis.call('ZCARD', logk)
local bytes = 0
local after = 0
if n > 0 then
    local last = redis.call('ZRANGE', logk, -1, -1, 'WITHSCORES')
    if tonumber(last[2]) == seq - 1 then
        local pts = string.match(last[1], '"ts":(%d+)}$') or string.match(last[1], '"ts":(%d+),"kind":"system"}$')
        if pts and tonumber(ts) > tonumber(pts) then
            after = tonumber(ts) - tonumber(pts)
        end
    end
    bytes = tonumber(redis.call('GET', bytesk) or '-1')
    if bytes < 0 then
        bytes = 0
        for _, e in ipairs(redis.call('ZRANGE', logk, 0, -1)) do
            bytes = bytes + #e
        end
    end
end
redis.call('ZADD', logk, seq, entry)
redis.call('ZADD', pendk, ts, room .. ':' .. seq)
n = n + 1
bytes = bytes + #entry

-- drop the oldest entries until both caps hold, keeping the newest; one
-- entry read at a time: a send usually drops one, and reading ahead would
-- copy large entries into Lua for nothing
local drop, freed = 0, 0
while n - drop > 1 and (n - drop > log_max or bytes - freed > log_bytes) do
    local e = redis.call('ZRANGE', logk, drop, drop)[1]
    if not e then
        break
    end
    drop = drop + 1
    freed = freed + #e
end
if drop > 0 then
    redis.call('ZREMRANGEBYRANK', logk, 0, drop - 1)
end
redis.call('SET', bytesk, bytes - freed)

if not backend then
    local cur = tonumber(redis.call('HGET', readk, sender) or '0')
    if seq > cur then
        redis.call('HSET', readk, sender, seq)
    end
end

return with_members({1, seq, tonumber(ts), after})
