-- lib/emit.lua: announce a change of a job. PUBLISH `kind` on the job's channel (wakes waiters) and, for every
-- job type but online predictions (hundreds a second; their answer is the reply list), append an entry to the
-- job's event log and to its tenant's (Redis Streams: their ids are the SSE event ids, so a client that
-- reconnects with Last-Event-ID misses nothing), plus a PUBLISH of the job id on the tenant's channel.
-- `kind` is queued | running | progress | cancel_requested | succeeded | failed | cancelled.
-- #include lib/keys.lua

-- store/job_scripts.py has the same two numbers (the first `queued` entry is written from Python).
local JOB_LOG_MAXLEN = 1000  -- one job's events (an epoch or a chunk each)
local TENANT_LOG_MAXLEN = 10000  -- a tenant's recent job events, kept for clients that reconnect (a few MB)

local function emit(job_key, channel, kind)
  local record = redis.call('HMGET', job_key, 'type', 'tenant', 'status', 'progress', 'model')
  local jtype, tenant, status, progress, model = record[1], record[2], record[3], record[4], record[5]
  if jtype and jtype ~= 'predict' and tenant then
    local job_id = job_id_of(job_key)
    local log = job_log_key(job_key)
    redis.call('XADD', log, 'MAXLEN', '~', JOB_LOG_MAXLEN, '*',
               'event', kind, 'status', status, 'progress', progress or '')
    local ttl = redis.call('TTL', job_key)
    if ttl > 0 then redis.call('EXPIRE', log, ttl) end
    redis.call('XADD', tenant_log_key(tenant), 'MAXLEN', '~', TENANT_LOG_MAXLEN, '*',
               'job', job_id, 'event', kind, 'type', jtype, 'model', model or '', 'status', status,
               'progress', progress or '')
    redis.call('PUBLISH', tenant_channel_key(tenant), job_id)
  end
  redis.call('PUBLISH', channel, kind)
end
