-- limit.lua: a per-user rate limit decision (GCRA, as gcra.lua), the user's
-- ban, and the strikes that lead to bans, in one call on the user's slot.
--
-- A banned user is refused whatever the rate.  A refusal is counted in the
-- user's strikes hash: `refusals` refusals within `window_ms` (a window that
-- opens with the first refusal) make one strike, and strike n bans the user
-- for the n-th of the ban durations (the last one repeats; 0 is permanent).
-- The ban key holds the ban's end in ms (0: permanent) and expires with the
-- ban; the strikes hash keeps `until` as well, so the first call after the
-- ban ran out can report it (the caller then marks the user active in MySQL).
-- Strikes are kept for good; a user with refusals but no strike yet is
-- forgotten when the refusal window ends.
-- interval_us 0 means no rate limit here: only the ban is checked.
--
--input: keys: [{u:<user>}:rl:<kind>, {u:<user>}:ban, {u:<user>}:strikes]
--       values: [interval_us, burst, refusals, window_ms, ban_ms, ban_ms, ...]
--               (refusals 0: refusals make no strikes; a ban_ms of 0 is permanent)
--output: {0, expired}                    allowed
--        {1, retry_after_ms, expired}    refused by the rate; nothing else changed but the strike count
--        {2, until_ms}                   banned (until_ms 0: permanent)
--        {3, until_ms, strikes}          this refusal made a strike, and the user is banned from now on
--        (expired is 1 when a ban recorded in the strikes hash has run out since the last call, else 0)
local rl, bank, strikes = KEYS[1], KEYS[2], KEYS[3]
local interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local refusals, window = tonumber(ARGV[3]), tonumber(ARGV[4])

local ban = redis.call('GET', bank)
if ban then
    return {2, tonumber(ban)}
end

local expired = 0
if redis.call('HDEL', strikes, 'until') == 1 then
    expired = 1
end

if interval == 0 then
    return {0, expired}
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local tat = tonumber(redis.call('GET', rl) or '0')
if tat < now then
    tat = now
end
local nxt = tat + interval
local over = nxt - now - (burst + 1) * interval
if over <= 0 then
    redis.call('SET', rl, string.format('%.0f', nxt), 'PX', math.ceil((nxt - now) / 1000) + 1)
    return {0, expired}
end

if refusals > 0 then
    local now_ms = math.floor(now / 1000)
    local opened = tonumber(redis.call('HGET', strikes, 'since') or '0')
    local n
    if now_ms - opened >= window then
        redis.call('HSET', strikes, 'since', now_ms, 'refused', 1)
        if redis.call('HEXISTS', strikes, 'n') == 0 then
            -- a user without strikes is forgotten with the window
            redis.call('PEXPIRE', strikes, window)
        end
        n = 1
    else
        n = redis.call('HINCRBY', strikes, 'refused', 1)
    end
    if n >= refusals then
        local count = redis.call('HINCRBY', strikes, 'n', 1)
        redis.call('HDEL', strikes, 'since', 'refused')
        redis.call('PERSIST', strikes)
        local nbans = #ARGV - 4
        local dur = tonumber(ARGV[4 + math.min(count, nbans)])
        local till = 0
        if dur > 0 then
            till = now_ms + dur
            redis.call('SET', bank, till, 'PX', dur)
        else
            redis.call('SET', bank, 0)
        end
        redis.call('HSET', strikes, 'until', till)
        return {3, till, count}
    end
end

return {1, math.ceil(over / 1000), expired}
