-- load.lua: loads a room into Redis from what MySQL holds (a new room, or a
-- room whose keys Redis lost), or revalidates a room whose generation is not
-- this master's; unless another worker did it first.
--
-- `{r:<room>}:seq` existing means "loaded"; it is written last.  The recent
-- log is dropped with its byte total (what it held is in MySQL; send.lua
-- fills both again) and the epoch changes, so a client's resume from before
-- the loss answers recovered=false.
--
-- The room's generation `{r:<room>}:gen` becomes replid, the replication id
-- of the master this runs on (see send.lua).  A loaded room of another
-- generation (a failover or a restart since it was loaded: this master may
-- lack its newest writes, or hold writes MySQL has not seen yet) is merged:
-- seq = max(Redis, MySQL), each read pointer the higher of the two, members
-- and former members as MySQL has them; MySQL's last_seq counts every acked
-- message (the relay-worker waited for the consumer first).
--
-- The cids of the room's latest messages go into the current idem bucket
-- (see send.lua), so a send retried across the loss is still recognised.
--
-- The room's members version {r:<room>}:mver becomes mver, a random number
-- the module draws for each load (join.lua and leave.lua add one to it):
-- a rebuilt member set must not come back under a version a worker may
-- still hold for the set before the loss.
--
--input: keys: [{r:<room>}:seq, {r:<room>}:members, {r:<room>}:left, {r:<room>}:read,
--              {r:<room>}:epoch, {r:<room>}:log, {r:<room>}:idem:<n>, {r:<room>}:gen,
--              {r:<room>}:logbytes, {r:<room>}:mver]
--       values: [last_seq, epoch, n, member * n, k, (user, left_seq) * k, j, (user, read_seq) * j,
--                i, ("sender:cid", "seq:ts") * i, idem_ttl_seconds, mver, replid]
--output: 1 loaded now, 2 revalidated now (it was loaded under another generation),
--        0 it was loaded under this generation already (nothing changed)
local replid = ARGV[#ARGV]
local loaded = redis.call('GET', KEYS[1])
if loaded and redis.call('GET', KEYS[8]) == replid then
    return 0
end

redis.call('DEL', KEYS[2], KEYS[3], KEYS[6], KEYS[9])
if not loaded then
    redis.call('DEL', KEYS[4])
end

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

-- forward only: Redis may hold pointers MySQL has not been told of yet
n = tonumber(ARGV[i])
for j = 1, n do
    local user, seq = ARGV[i + 2 * j - 1], tonumber(ARGV[i + 2 * j])
    if seq > tonumber(redis.call('HGET', KEYS[4], user) or '0') then
        redis.call('HSET', KEYS[4], user, ARGV[i + 2 * j])
    end
end
i = i + 2 * n + 1

n = tonumber(ARGV[i])
for j = 1, n do
    redis.call('HSETNX', KEYS[7], ARGV[i + 2 * j - 1], ARGV[i + 2 * j])
end
if n > 0 then
    redis.call('EXPIRE', KEYS[7], 2 * tonumber(ARGV[i + 2 * n + 1]))
end

local seq = tonumber(ARGV[1])
if loaded and tonumber(loaded) > seq then
    seq = tonumber(loaded)
end

redis.call('SET', KEYS[5], ARGV[2])
redis.call('SET', KEYS[10], ARGV[#ARGV - 1])
redis.call('SET', KEYS[8], replid)
redis.call('SET', KEYS[1], string.format('%.0f', seq))
if loaded then
    return 2
end
return 1
