"""The Lua sources of JobStore's status transitions (store/jobs.py registers them); strings only, no imports.

They live apart from JobStore because they are a second language with their own contract (positional KEYS and
ARGV, documented above each script), and because store/lease_scripts.py builds on `FINISH_LUA`: every final
transition, fenced or not, must update the record, the running and active sets, the counters and the channel the
same way. The API imports this module through store.jobs, so it must stay free of anything heavier than the stdlib.
"""

TENANT_LOG_MAXLEN = 10_000  # a tenant's recent job events, kept for clients that reconnect (a few MB)
JOB_LOG_MAXLEN = 1_000  # one job's events (an epoch or a chunk each)

# Every change of a job is announced by `emit`: PUBLISH on the job's channel (wakes waiters) and, for every job type
# but online predictions (hundreds a second; their answer is the reply list), an entry on the job's event log
# `mlq:job:{id}:log` and on the tenant's `mlq:tenant:{t}:log` (Redis Streams: their ids are the SSE event ids, so a
# client that reconnects with Last-Event-ID misses nothing), plus a PUBLISH on the tenant's channel.
# `kind` is queued | running | progress | cancel_requested | succeeded | failed | cancelled.
EMIT_LUA = """
local function emit(job_key, channel, kind)
  local f = redis.call('HMGET', job_key, 'type', 'tenant', 'status', 'progress', 'model')
  if f[1] and f[1] ~= 'predict' and f[2] then
    local id = string.sub(job_key, 9)
    local log = job_key .. ':log'
    redis.call('XADD', log, 'MAXLEN', '~', """ + str(JOB_LOG_MAXLEN) + """, '*',
               'event', kind, 'status', f[3], 'progress', f[4] or '')
    local ttl = redis.call('TTL', job_key)
    if ttl > 0 then redis.call('EXPIRE', log, ttl) end
    redis.call('XADD', 'mlq:tenant:' .. f[2] .. ':log', 'MAXLEN', '~', """ + str(TENANT_LOG_MAXLEN) + """, '*',
               'job', id, 'event', kind, 'type', f[1], 'model', f[5] or '', 'status', f[3], 'progress', f[4] or '')
    redis.call('PUBLISH', 'mlq:tenant:' .. f[2] .. ':events', id)
  end
  redis.call('PUBLISH', channel, kind)
end
"""

# Shared by every script: finish the job in KEYS[1] unless it is final. KEYS: job, running set, metrics jobs,
# metrics duration, cancel flag, channel. The duration histogram counts from the first start to the end.
FINISH_LUA = EMIT_LUA + """
local function is_final(s) return s == 'succeeded' or s == 'failed' or s == 'cancelled' end
local function finish(id, new, now, now_ms, ttl, result, err, first_bucket)
  redis.call('HSET', KEYS[1], 'status', new, 'finished_at', now, 'result', result, 'error', err)
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('SREM', KEYS[2], id)
  -- The tenant's active set (see JobStore.admit); its name comes from the record (standalone Redis only).
  local owner = redis.call('HGET', KEYS[1], 'tenant')
  if owner then redis.call('SREM', 'mlq:active:' .. owner, id) end
  local jtype = redis.call('HGET', KEYS[1], 'type')
  redis.call('HINCRBY', KEYS[3], jtype .. ':' .. new, 1)
  local started = redis.call('HGET', KEYS[1], 'started_ms')
  if started and started ~= '' then
    local d = (tonumber(now_ms) - tonumber(started)) / 1000.0
    for i = first_bucket, #ARGV do
      if d <= tonumber(ARGV[i]) then redis.call('HINCRBY', KEYS[4], jtype .. ':le:' .. ARGV[i], 1) end
    end
    redis.call('HINCRBYFLOAT', KEYS[4], jtype .. ':sum', d)
    redis.call('HINCRBY', KEYS[4], jtype .. ':count', 1)
  end
  emit(KEYS[1], KEYS[6], new)
end
"""

# ARGV: id, status, now, now_ms, ttl, result, error, buckets...
FINISH = FINISH_LUA + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -1 end
if is_final(status) then return 0 end
finish(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], 8)
return 1
"""

# ARGV: id, worker, now, now_ms, ttl, cancelled error, buckets...
MARK_RUNNING = FINISH_LUA + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or is_final(status) then return 0 end
if redis.call('EXISTS', KEYS[5]) == 1 then
  finish(ARGV[1], 'cancelled', ARGV[3], ARGV[4], ARGV[5], '', ARGV[6], 7)
  return 0
end
if redis.call('HGET', KEYS[1], 'started_at') == '' then
  redis.call('HSET', KEYS[1], 'started_at', ARGV[3], 'started_ms', ARGV[4])
end
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[3], redis.call('HGET', KEYS[1], 'type') .. ':running', 1)
emit(KEYS[1], KEYS[6], 'running')
return 1
"""

# ARGV: id, now, now_ms, ttl, cancelled error, buckets...   → -1 missing, 0 already final, 1 flagged
CANCEL = FINISH_LUA + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -1 end
if is_final(status) then return 0 end
redis.call('SET', KEYS[5], '1', 'EX', ARGV[4])
if status == 'queued' then
  finish(ARGV[1], 'cancelled', ARGV[2], ARGV[3], ARGV[4], '', ARGV[5], 6)
else
  emit(KEYS[1], KEYS[6], 'cancel_requested')
end
return 1
"""

# ARGV: job id, max active  → 1 admitted, 0 the tenant is at its limit. KEYS: the tenant's active set.
ADMIT = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
return 1
"""

# Online inference: finish like FINISH (unless already final), then push the record (HGETALL as a JSON array)
# to the job's reply list, where the API thread that submitted it waits with BLPOP. KEYS: JobStore._keys() + reply list.
REPLY_TTL_MS = 60_000  # the submitter waits at most 30 s; an unread reply goes soon after
FINISH_REPLY = FINISH_LUA + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -1 end
local done = 0
if not is_final(status) then
  finish(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], 8)
  done = 1
end
redis.call('RPUSH', KEYS[7], cjson.encode(redis.call('HGETALL', KEYS[1])))
redis.call('PEXPIRE', KEYS[7], """ + str(REPLY_TTL_MS) + """)
return done
"""

# A new online prediction: its record, its place in the tenant's list, the queued counter and its request on the
# inference stream, in one script (EVAL, not EVALSHA: a pipeline with a registered script first asks SCRIPT EXISTS,
# one more round trip on the hottest path). KEYS: job, tenant index, metrics jobs, inference stream.
# ARGV: job id, created ms, stream field, request, then the record's field/value pairs.
CREATE_PREDICT = """
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('HINCRBY', KEYS[3], 'predict:queued', 1)
redis.call('XADD', KEYS[4], '*', ARGV[3], ARGV[4])
return 1
"""

# ARGV: progress JSON
PROGRESS = EMIT_LUA + """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'progress', ARGV[1])
emit(KEYS[1], KEYS[2], 'progress')
return 1
"""
