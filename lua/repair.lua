-- repair.lua: what the module's sweeper needs to publish again a message
-- admitted long ago and still not known durable (see send.lua's pending
-- index and ngx_http_minichat_durable.c).
--
-- The entry may have been confirmed meanwhile (taken out of the index):
-- nothing to do.  The recent log may no longer hold it (trimmed past the
-- caps, or Redis lost the room): it cannot be published again, and leaves
-- the index as lost.  Otherwise the script answers the log's `msg` frame
-- and the room's members now (the recipients of the repair).  Like
-- send.lua it checks the room's generation first, so that the module
-- revalidates a room a failover may have set back before it republishes
-- one of its seqs.
--
-- The members come as in send.lua: the room's members version, then the
-- members only when it is not the one the caller holds.
--
--input: keys: [{r:<room>}:seq, {r:<room>}:log, {r:<room>}:members, {r:<room>}:gen, {<roomtag>}:pend,
--              {r:<room>}:mver]
--       values: [seq, member ("<room>:<seq>"), held_mver, replid]
--output: {1, entry, mver[, "m1,m2,..."]}  publish entry again, to the members (one string, when
--                                         mver is not held_mver)
--        {0}                              confirmed meanwhile: nothing to do
--        {-2}                             the room is not loaded
--        {-4}                             the room's generation is not this master's
--        {-5}                             not in the recent log any more: lost (taken out of the index)
local seqk, logk, members, genk, pendk, mverk = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local seq, member, held, replid = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

if redis.call('ZSCORE', pendk, member) == false then
    return {0}
end

if redis.call('EXISTS', seqk) == 0 then
    return {-2}
end

if redis.call('GET', genk) ~= replid then
    return {-4}
end

local entry = redis.call('ZRANGEBYSCORE', logk, seq, seq)
if #entry == 0 then
    redis.call('ZREM', pendk, member)
    return {-5}
end

local ver = redis.call('GET', mverk)
if ver and ver == held then
    return {1, entry[1], ver}
end
return {1, entry[1], ver or '', table.concat(redis.call('SMEMBERS', members), ',')}
