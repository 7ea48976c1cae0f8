-- gcra.lua: one rate limit decision with GCRA (lib/src/rate.c is the same
-- algorithm in C, unit-tested): connections per client address.
--
-- The key holds one number, the theoretical arrival time (TAT) of the next
-- request in microseconds of Redis's clock (TIME: one clock for every node),
-- and expires once it is in the past, so an idle client costs nothing.
-- burst is nginx's: that many requests beyond the rate may come at once.
--
--input: keys: [{ip:<addr>}:rl:conn]
--       values: [interval_us, burst]  (interval_us = 1000000 / rate per second)
--output: {0}                   allowed
--        {1, retry_after_ms}   refused; nothing changed
local key = KEYS[1]
local interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local tat = tonumber(redis.call('GET', key) or '0')
if tat < now then
    tat = now
end
local nxt = tat + interval
local over = nxt - now - (burst + 1) * interval
if over > 0 then
    return {1, math.ceil(over / 1000)}
end
redis.call('SET', key, string.format('%.0f', nxt), 'PX', math.ceil((nxt - now) / 1000) + 1)
return {0}
