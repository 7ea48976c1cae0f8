-- seq.lua: a room's last seq, for a member (an invite's join seq).
--
--input: keys: [{r:<room>}:members, {r:<room>}:seq]
--       values: [user]
--output: {1, last_seq}, {-1} not a member, {-2} the room is not loaded
local last = redis.call('GET', KEYS[2])
if not last then
    return {-2}
end
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then
    return {-1}
end
return {1, tonumber(last)}
