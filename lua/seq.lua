-- seq.lua: a room's last seq, for a member (an invite's join seq).
--
-- The seq is only trusted under the room's generation (see send.lua): a
-- master whose replication id is not the room's may lack acked seqs.
--
--input: keys: [{r:<room>}:members, {r:<room>}:seq, {r:<room>}:gen]
--       values: [user, replid]
--output: {1, last_seq}, {-1} not a member, {-2} the room is not loaded,
--        {-4} the room's generation is not this master's (revalidate, then retry)
local last = redis.call('GET', KEYS[2])
if not last then
    return {-2}
end
if redis.call('GET', KEYS[3]) ~= ARGV[2] then
    return {-4}
end
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then
    return {-1}
end
return {1, tonumber(last)}
