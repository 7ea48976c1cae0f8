-- offline.lua: a device is gone (its name given: `<sid>:<connection id>`)
-- or a sweep found the user's devices expired (""); when no live device is
-- left the user is offline, last seen now.
--
--input: keys: [{u:<user>}:devices, {u:<user>}:seen]
--       values: [device or "", now_ms]
--output: {1, now}  the user is offline
--        {0}       a device of the user is still live
local devices, seen = KEYS[1], KEYS[2]
local sid, now = ARGV[1], tonumber(ARGV[2])

if sid ~= '' then
    redis.call('ZREM', devices, sid)
end
redis.call('ZREMRANGEBYSCORE', devices, '-inf', now)
if redis.call('ZCARD', devices) > 0 then
    return {0}
end
redis.call('SET', seen, ARGV[2])
return {1, now}
