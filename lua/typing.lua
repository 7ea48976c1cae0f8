-- typing.lua: a member is typing; at most one event per user and room per
-- throttle interval.  The reply carries the room's members version and,
-- unless it is the one the caller holds, the members (as send.lua; see
-- ngx_http_minichat_members.c).
--
--input: keys: [{r:<room>}:members, {r:<room>}:seq, {r:<room>}:typing:<user>, {r:<room>}:mver]
--       values: [user, throttle_ms (0: no throttle), held_mver]
--output: {1, mver[, "m1,m2,..."]}   tell the members: the version, and the members in one string when
--                                   mver is not held_mver
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
local ver = redis.call('GET', KEYS[4])
if ver and ver == ARGV[3] then
    return {1, ver}
end
return {1, ver or '', table.concat(redis.call('SMEMBERS', KEYS[1]), ',')}
