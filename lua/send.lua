-- send.lua: admits one chat message into a room.
--
-- Checks that the sender is a member, deduplicates on (sender, cid), assigns
-- the room's next dense seq and appends the message to the room's recent log.
-- Every key shares the room's hashtag, so the script runs on one cluster slot.
--
--input: keys: [{r:<room>}:members, {r:<room>}:seq, {r:<room>}:idem, {r:<room>}:log]
--       values: [sender, cid, body, ts_ms, log_max, idem_ttl_seconds]
--output: {1, seq, ts, member, member, ...}  a new message, with the members to deliver to
--        {2, seq, ts}                        the same (sender, cid) was admitted before: its seq and ts
--        {-1}                                the sender is not a member of the room
local members, seqk, idem, logk = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local sender, cid, body, ts = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local log_max, idem_ttl = tonumber(ARGV[5]), tonumber(ARGV[6])

if redis.call('SISMEMBER', members, sender) == 0 then
    return {-1}
end

local field = sender .. ':' .. cid
local prev = redis.call('HGET', idem, field)
if prev then
    local sep = string.find(prev, ':', 1, true)
    return {2, tonumber(string.sub(prev, 1, sep - 1)), tonumber(string.sub(prev, sep + 1))}
end

local seq = redis.call('INCR', seqk)
redis.call('HSET', idem, field, seq .. ':' .. ts)
redis.call('EXPIRE', idem, idem_ttl)
redis.call('ZADD', logk, seq, cjson.encode({seq, tonumber(sender), cid, body, tonumber(ts)}))
local n = redis.call('ZCARD', logk)
if n > log_max then
    redis.call('ZREMRANGEBYRANK', logk, 0, n - log_max - 1)
end

local r = {1, seq, tonumber(ts)}
for _, m in ipairs(redis.call('SMEMBERS', members)) do
    r[#r + 1] = tonumber(m)
end
return r
