-- join.lua: users join a room (an invite MySQL has committed): into the
-- member set, their read pointer at the seq they joined at.  Users who are
-- members already are left as they are, so a retried invite repairs a
-- member set without touching anybody's pointer.  When the set changed, the
-- room's members version goes up by one (see send.lua).
--
--input: keys: [{r:<room>}:members, {r:<room>}:seq, {r:<room>}:left, {r:<room>}:read, {r:<room>}:mver]
--       values: [joined_seq, user, user, ...]
--output: the number of users added, or -2 when the room is not loaded (a
--        rebuild from MySQL then brings them in)
if redis.call('EXISTS', KEYS[2]) == 0 then
    return -2
end
local n = 0
for i = 2, #ARGV do
    -- a member already (a retried invite, or invited twice) keeps its pointer
    if redis.call('SADD', KEYS[1], ARGV[i]) == 1 then
        n = n + 1
        redis.call('HDEL', KEYS[3], ARGV[i])
        local cur = tonumber(redis.call('HGET', KEYS[4], ARGV[i]) or '0')
        if tonumber(ARGV[1]) > cur then
            redis.call('HSET', KEYS[4], ARGV[i], ARGV[1])
        end
    end
end
if n > 0 then
    redis.call('INCR', KEYS[5])
end
return n
