-- read.lua: moves a member's read pointer forward.
--
-- The pointer only moves forward and never past the room's last seq.
--
--input: keys: [{r:<room>}:members, {r:<room>}:seq, {r:<room>}:read]
--       values: [user, seq]
--output: {1, pointer, moved, "m1,m2,..."}       moved is 1 when the pointer changed; the members in one string
--        {-1}                                    the user is not a member
--        {-2}                                    the room is not loaded
local members, seqk, readk = KEYS[1], KEYS[2], KEYS[3]
local user, want = ARGV[1], tonumber(ARGV[2])

local last = redis.call('GET', seqk)
if not last then
    return {-2}
end
if redis.call('SISMEMBER', members, user) == 0 then
    return {-1}
end

last = tonumber(last)
if want > last then
    want = last
end

local cur = tonumber(redis.call('HGET', readk, user) or '0')
local r
if want > cur then
    redis.call('HSET', readk, user, want)
    r = {1, want, 1}
else
    r = {1, cur, 0}
end
r[4] = table.concat(redis.call('SMEMBERS', members), ',')
return r
