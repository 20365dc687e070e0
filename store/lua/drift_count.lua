-- drift_count.lua: add one batch's drift bin counts to a version's time bucket. DriftCounts.add_in.
--
-- KEYS[1] counts   the version's bucket: a hash of bin → count (store.keys.drift_counts)
-- KEYS[2] active   the versions counted lately: a sorted set, score = last counted (store.keys.DRIFT_ACTIVE)
-- ARGV[1] ttl_s    the bucket's time to live, renewed with every batch
-- ARGV[2] fields   "field count field count …", space-separated: one HINCRBY each
-- ARGV[3] member   the version in the active set (JSON [tenant, model, version])
-- ARGV[4] now      unix seconds: the member's score (only ever raised)
-- ARGV[5] oldest   members scored below this are dropped
-- ARGV[6] keep     at most this many members are kept, the most recent
--
-- The fields travel as ONE argument: a client library packs every argument on its own, and ~300 HINCRBYs of a
-- batch of distinct rows cost a worker milliseconds that way (docs/drift.md, "Cost").
--
-- Returns {'counted', n} with n the number of fields added (DriftCountOutcome).

local counts, active = KEYS[1], KEYS[2]
local ttl_s, fields, member, now, oldest, keep = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])

local n = 0
for field, count in string.gmatch(fields, '(%S+) (%S+)') do
  redis.call('HINCRBY', counts, field, count)
  n = n + 1
end
redis.call('EXPIRE', counts, ttl_s)
redis.call('ZADD', active, 'GT', now, member)
redis.call('ZREMRANGEBYSCORE', active, '-inf', '(' .. oldest)
redis.call('ZREMRANGEBYRANK', active, 0, -(keep + 1))
return {'counted', n}
