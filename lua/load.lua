-- load.lua: loads a room into Redis from what MySQL holds (a new room, or a
-- room whose keys Redis lost), unless it is loaded already.
--
-- `{r:<room>}:seq` existing means "loaded"; it is written last.  The recent
-- log is dropped with its byte total (what it held is in MySQL; send.lua
-- fills both again) and the epoch changes, so a client's resume from before
-- the loss answers recovered=false.
--
-- The cids of the room's latest messages go into the current idem bucket
-- (see send.lua), so a send retried across the loss is still recognised.
--
--input: keys: [{r:<room>}:seq, {r:<room>}:members, {r:<room>}:left, {r:<room>}:read,
--              {r:<room>}:epoch, {r:<room>}:log, {r:<room>}:idem:<n>, {r:<room>}:logbytes]
--       values: [last_seq, epoch, n, member * n, k, (user, left_seq) * k, j, (user, read_seq) * j,
--                i, ("sender:cid", "seq:ts") * i, idem_ttl_seconds]
--output: 1 loaded now, 0 it was loaded already (nothing changed)
if redis.call('EXISTS', KEYS[1]) == 1 then
    return 0
end

redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[6], KEYS[8])

local i = 3
local n = tonumber(ARGV[i])
for j = 1, n do
    redis.call('SADD', KEYS[2], ARGV[i + j])
end
i = i + n + 1

n = tonumber(ARGV[i])
for j = 1, n do
    redis.call('HSET', KEYS[3], ARGV[i + 2 * j - 1], ARGV[i + 2 * j])
end
i = i + 2 * n + 1

n = tonumber(ARGV[i])
for j = 1, n do
    redis.call('HSET', KEYS[4], ARGV[i + 2 * j - 1], ARGV[i + 2 * j])
end
i = i + 2 * n + 1

n = tonumber(ARGV[i])
for j = 1, n do
    redis.call('HSETNX', KEYS[7], ARGV[i + 2 * j - 1], ARGV[i + 2 * j])
end
if n > 0 then
    redis.call('EXPIRE', KEYS[7], 2 * tonumber(ARGV[i + 2 * n + 1]))
end

redis.call('SET', KEYS[5], ARGV[2])
redis.call('SET', KEYS[1], ARGV[1])
return 1
