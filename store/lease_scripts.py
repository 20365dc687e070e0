"""The Lua sources of the training-attempt leases (store/leases.py registers them); strings only.

Apart from `Leases` because they are a second language with their own positional contract: KEYS[1..6] are
exactly `JobStore._keys()` and the attempt's heartbeat is KEYS[7] (`Leases` checks that at start-up), and every
final transition reuses store/job_scripts.py's `finish()` so a fenced finish updates the record, sets, counters
and channel exactly as an unfenced one.
"""

from store.job_scripts import FINISH_LUA

# KEYS: the JobStore keys (job, running set, metrics jobs, metrics duration, cancel flag, channel) + heartbeat.
# ARGV: id, worker, now, now_ms, ttl, cancelled error, heartbeat ttl ms, max attempts, poison error, buckets...
BEGIN = FINISH_LUA + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {0, 'missing'} end
if is_final(status) then return {0, 'final'} end
if redis.call('EXISTS', KEYS[5]) == 1 then
  finish(ARGV[1], 'cancelled', ARGV[3], ARGV[4], ARGV[5], '', ARGV[6], 10)
  return {0, 'cancelled'}
end
if status == 'running' and redis.call('EXISTS', KEYS[7]) == 1 then return {0, 'running_elsewhere'} end
-- queued, or running with a dead holder whose message came back before a sweeper noticed
local used = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0') -
             tonumber(redis.call('HGET', KEYS[1], 'preempted') or '0')
if used >= tonumber(ARGV[8]) then
  finish(ARGV[1], 'failed', ARGV[3], ARGV[4], ARGV[5], '', ARGV[9], 10)
  return {0, 'poison'}
end
if (redis.call('HGET', KEYS[1], 'started_at') or '') == '' then
  redis.call('HSET', KEYS[1], 'started_at', ARGV[3], 'started_ms', ARGV[4])
end
local token = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[2], 'attempt_started_ms', ARGV[4])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[3], redis.call('HGET', KEYS[1], 'type') .. ':running', 1)
redis.call('SET', KEYS[7], ARGV[2] .. ':' .. token, 'PX', ARGV[7])
emit(KEYS[1], KEYS[6], 'running')
return {1, token}
"""

# KEYS: job, heartbeat. ARGV: token, value, ttl ms. → 1 refreshed, 0 the lease is gone (final, requeued, newer).
HEARTBEAT = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' or redis.call('HGET', KEYS[1], 'attempts') ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1
"""

# KEYS: JobStore keys + heartbeat. ARGV: id, status, now, now_ms, ttl, result, error, token, buckets...
FINISH_FENCED = FINISH_LUA + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -1 end
if is_final(status) then return 0 end
if status ~= 'running' or redis.call('HGET', KEYS[1], 'attempts') ~= ARGV[8] then return 2 end
finish(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], 9)
redis.call('DEL', KEYS[7])
return 1
"""

# KEYS: JobStore keys + heartbeat. ARGV: id, now, now_ms, ttl, cancelled error, max attempts, poison error,
# time limit ms, time limit error, buckets...
SWEEP = FINISH_LUA + """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'running' then
  redis.call('SREM', KEYS[2], ARGV[1])
  return 'not_running'
end
local jtype = redis.call('HGET', KEYS[1], 'type')
if jtype ~= 'train' and jtype ~= 'batch_predict' and jtype ~= 'optimize' then return 'not_train' end
if redis.call('EXISTS', KEYS[7]) == 1 then return 'alive' end
if redis.call('EXISTS', KEYS[5]) == 1 then
  finish(ARGV[1], 'cancelled', ARGV[2], ARGV[3], ARGV[4], '', ARGV[5], 10)
  return 'cancelled'
end
local used = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0') -
             tonumber(redis.call('HGET', KEYS[1], 'preempted') or '0')
if used >= tonumber(ARGV[6]) then
  finish(ARGV[1], 'failed', ARGV[2], ARGV[3], ARGV[4], '', ARGV[7], 10)
  return 'poison'
end
local attempt_started = tonumber(redis.call('HGET', KEYS[1], 'attempt_started_ms') or '0') or 0
if tonumber(ARGV[8]) > 0 and attempt_started > 0 and tonumber(ARGV[3]) - attempt_started >= tonumber(ARGV[8]) then
  finish(ARGV[1], 'failed', ARGV[2], ARGV[3], ARGV[4], '', ARGV[9], 10)
  return 'time_limit'
end
redis.call('HSET', KEYS[1], 'status', 'queued', 'worker', '')
redis.call('HINCRBY', KEYS[1], 'requeues', 1)
redis.call('SREM', KEYS[2], ARGV[1])
emit(KEYS[1], KEYS[6], 'queued')
return 'requeued'
"""

# KEYS: JobStore keys + heartbeat. ARGV: id, token, now, now_ms, ttl, buckets... → 1 requeued, 2 cancelled, 0 fenced
PREEMPT = FINISH_LUA + """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' or redis.call('HGET', KEYS[1], 'attempts') ~= ARGV[2] then
  return 0
end
redis.call('DEL', KEYS[7])
if redis.call('EXISTS', KEYS[5]) == 1 then
  finish(ARGV[1], 'cancelled', ARGV[3], ARGV[4], ARGV[5], '', '', 6)
  return 2
end
redis.call('HSET', KEYS[1], 'status', 'queued', 'worker', '')
redis.call('HINCRBY', KEYS[1], 'preempted', 1)
redis.call('SREM', KEYS[2], ARGV[1])
emit(KEYS[1], KEYS[6], 'queued')
return 1
"""

# The re-send after a requeue failed: make the job look running-with-a-dead-holder again, so a later sweep retries.
# KEYS: job, running set. ARGV: id, attempts when requeued.
UNREQUEUE = """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' or redis.call('HGET', KEYS[1], 'attempts') ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], 'status', 'running')
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""

# KEYS: job, claim, cancel flag. ARGV: token, ttl s, takeover-from ('' = none).
# → 1 claimed; 0 fenced (not the current attempt); -1 cancel requested; -2 claimed by attempt <value> (see reply)
CLAIM = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' or redis.call('HGET', KEYS[1], 'attempts') ~= ARGV[1] then
  return {0, ''}
end
if redis.call('EXISTS', KEYS[3]) == 1 then return {-1, ''} end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] and holder ~= ARGV[3] then return {-2, holder} end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
return {1, ''}
"""
