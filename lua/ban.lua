-- ban.lua: a ban set or lifted by hand (the server API, minichat-ban), on
-- the same keys lua/limit.lua reads, so a ban from here refuses what a
-- strike's ban refuses, and a lift lets the user in at once.
--
-- The ban key holds the ban's end in ms (0: permanent) and expires with the
-- ban, as limit.lua writes it; the strikes hash keeps `until` as well, so
-- that the first check after a timed ban ran out reports it (the module then
-- marks the user active in MySQL).  A lift removes both, so nothing is
-- reported later; forgive also forgets the strikes.  Strikes are not counted
-- here: a ban by hand is not a strike.
--
--input: keys: [{u:<user>}:ban, {u:<user>}:strikes]
--       values: [op, dur_ms]
--               op: "ban" (dur_ms > 0: that long; 0: permanent), "lift",
--               "forgive" (lift, and forget the strikes), "get" (change nothing)
--output: {banned, until_ms, strikes} after the op: banned 1 or 0; until_ms the
--        ban's end (0: permanent, or not banned); strikes the count so far
--        ({-1} for an unknown op)
local bank, strikes = KEYS[1], KEYS[2]
local op, dur = ARGV[1], tonumber(ARGV[2] or '0')

if op == 'ban' then
    local till = 0
    if dur > 0 then
        local t = redis.call('TIME')
        till = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + dur
        redis.call('SET', bank, string.format('%.0f', till), 'PX', dur)
    else
        redis.call('SET', bank, 0)
    end
    redis.call('HSET', strikes, 'until', string.format('%.0f', till))
    redis.call('PERSIST', strikes)
elseif op == 'lift' then
    redis.call('DEL', bank)
    redis.call('HDEL', strikes, 'until')
elseif op == 'forgive' then
    redis.call('DEL', bank, strikes)
elseif op ~= 'get' then
    return {-1}
end

local ban = redis.call('GET', bank)
local n = tonumber(redis.call('HGET', strikes, 'n') or '0')
if ban then
    return {1, tonumber(ban), n}
end
return {0, 0, n}
