-- resume.lua: the messages a client missed in one room, from the recent log.
--
-- Recovered only when the log still holds every seq after the client's and
-- the room's epoch is the one the client knew (when it gave one): a room
-- that Redis lost and rebuilt has a new epoch and an empty log.
--
-- A replay larger than max_bytes is not recovered either: the connection's
-- output queue could not hold it, and history pages it in bounded steps.
--
--input: keys: [{r:<room>}:members, {r:<room>}:seq, {r:<room>}:log, {r:<room>}:epoch]
--       values: [user, seq the client has, epoch the client knew ("" = none), most entries to replay,
--                max_bytes]
--output: {1, last_seq, epoch, recovered, entry ...}  entries (msg JSON) in seq order when recovered
--        {-1}                                       not a member
--        {-2}                                       the room is not loaded
local members, seqk, logk, epochk = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local user, from, known, max = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local max_bytes = tonumber(ARGV[5])

local last = redis.call('GET', seqk)
if not last then
    return {-2}
end
last = tonumber(last)
if redis.call('SISMEMBER', members, user) == 0 then
    return {-1}
end

local epoch = redis.call('GET', epochk) or ''
if (known ~= '' and known ~= epoch) or from > last or last - from > max then
    return {1, last, epoch, 0}
end
if from == last then
    return {1, last, epoch, 1}
end

local entries = redis.call('ZRANGEBYSCORE', logk, from + 1, last)
if #entries ~= last - from then
    return {1, last, epoch, 0}
end
local r = {1, last, epoch, 1}
local bytes = 0
for _, e in ipairs(entries) do
    bytes = bytes + #e
    if bytes > max_bytes then
        return {1, last, epoch, 0}
    end
    r[#r + 1] = e
end
return r
