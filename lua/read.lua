-- read.lua: moves a member's read pointer forward.
--
-- The pointer only moves forward and never past the room's last seq.  When
-- it moved, the members are told: the reply carries the room's members
-- version and, unless it is the one the caller holds, the members (as
-- send.lua; see ngx_http_minichat_members.c).
--
--input: keys: [{r:<room>}:members, {r:<room>}:seq, {r:<room>}:read, {r:<room>}:mver]
--       values: [user, seq, held_mver]
--output: {1, pointer, 1, mver[, "m1,m2,..."]}   the pointer moved; the members version, and the
--                                                members in one string when mver is not held_mver
--        {1, pointer, 0}                         the pointer did not move (nobody to tell)
--        {-1}                                    the user is not a member
--        {-2}                                    the room is not loaded
local members, seqk, readk, mverk = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local user, want, held = ARGV[1], tonumber(ARGV[2]), ARGV[3]

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
if want <= cur then
    return {1, cur, 0}
end

redis.call('HSET', readk, user, want)
local ver = redis.call('GET', mverk)
local r = {1, want, 1, ver or ''}
if not ver or ver ~= held then
    r[5] = table.concat(redis.call('SMEMBERS', members), ',')
end
return r
