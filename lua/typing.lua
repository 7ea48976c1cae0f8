-- typing.lua: a member is typing; at most one event per user and room per
-- throttle interval.
--
--input: keys: [{r:<room>}:members, {r:<room>}:seq, {r:<room>}:typing:<user>]
--       values: [user, throttle_ms (0: no throttle)]
--output: {1, "m1,m2,..."}          tell these members (one string)
--        {0}                       throttled: an event went out less than throttle_ms ago
--        {-1}                      the user is not a member
--        {-2}                      the room is not loaded
if redis.call('EXISTS', KEYS[2]) == 0 then
    return {-2}
end
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then
    return {-1}
end
if tonumber(ARGV[2]) > 0 and not redis.call('SET', KEYS[3], '1', 'PX', ARGV[2], 'NX') then
    return {0}
end
return {1, table.concat(redis.call('SMEMBERS', KEYS[1]), ',')}
