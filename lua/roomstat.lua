-- roomstat.lua: a room's last seq and one member's read pointer, for the
-- unread counts of the room list.
--
--input: keys: [{r:<room>}:seq, {r:<room>}:read]
--       values: [user]
--output: {last_seq, read_seq}, or {-2} when the room is not loaded (the caller uses MySQL's values)
local last = redis.call('GET', KEYS[1])
if not last then
    return {-2}
end
return {tonumber(last), tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')}
