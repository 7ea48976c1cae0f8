-- session.lua: a connection starts or refreshes its session and its device
-- entry for presence.
--
-- The device is the connection (`<sid>:<connection id>`), not the session:
-- a client that reconnects with the same sid while its old connection
-- lingers has two devices, and the old one going away leaves the new one.
--
--input: keys: [{u:<user>}:sess:<sid>, {u:<user>}:devices]
--       values: [node, device, now_ms, ttl_ms]
--output: {known, others, had_self}
--          known:    the session existed before (a resumed sid)
--          others:   1 when another device of the user is live
--          had_self: 1 when this device's entry was live (a refresh); 0 when
--                    it starts, or was swept as expired meanwhile
local sess, devices = KEYS[1], KEYS[2]
local node, device, now, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])

local known = redis.call('EXISTS', sess)
redis.call('SET', sess, node, 'PX', ttl)

redis.call('ZREMRANGEBYSCORE', devices, '-inf', now)
local had_self = redis.call('ZSCORE', devices, device) and 1 or 0
local others = redis.call('ZCARD', devices) - had_self
redis.call('ZADD', devices, now + ttl, device)
redis.call('PEXPIRE', devices, ttl)

return {known, others > 0 and 1 or 0, had_self}
