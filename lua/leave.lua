-- leave.lua: a member leaves a room: out of the member set, its leave seq
-- recorded (it may page history up to it), its read pointer dropped, and the
-- room's members version up by one (see send.lua).
--
--input: keys: [{r:<room>}:members, {r:<room>}:seq, {r:<room>}:left, {r:<room>}:read, {r:<room>}:mver]
--       values: [user, left_seq]
--output: 1 removed, 0 was not a member, -2 the room is not loaded
if redis.call('EXISTS', KEYS[2]) == 0 then
    return -2
end
if redis.call('SREM', KEYS[1], ARGV[1]) == 0 then
    return 0
end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('INCR', KEYS[5])
return 1
