-- unlist.lua: takes a user off the presence index when its entry has
-- expired; the caller that removed it (one, among every node's sweepers)
-- announces the user offline.
--
--input: keys: [{presence}:online]
--       values: [user, now_ms]
--output: 1 removed by this call, 0 not there or refreshed meanwhile
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then
    redis.call('ZREM', KEYS[1], ARGV[1])
    return 1
end
return 0
