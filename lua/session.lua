-- session.lua: a connection starts or refreshes its session and its device
-- entry for presence.
--
--input: keys: [{u:<user>}:sess:<sid>, {u:<user>}:devices]
--       values: [node, sid, now_ms, ttl_ms]
--output: {known, was_online}  known: the session existed before (a resumed sid);
--                             was_online: another device of the user was live already
local sess, devices = KEYS[1], KEYS[2]
local node, sid, now, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])

local known = redis.call('EXISTS', sess)
redis.call('SET', sess, node, 'PX', ttl)

redis.call('ZREMRANGEBYSCORE', devices, '-inf', now)
local others = redis.call('ZCARD', devices) - (redis.call('ZSCORE', devices, sid) and 1 or 0)
redis.call('ZADD', devices, now + ttl, sid)
redis.call('PEXPIRE', devices, ttl)

return {known, others > 0 and 1 or 0}
