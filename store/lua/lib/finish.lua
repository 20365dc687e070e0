-- lib/finish.lua: move a job to a final status; shared by every script that ends a job, fenced or not, so each
-- final transition updates the record, the running and active sets, the counters and the channel the same way.
-- `job` is the table every job script builds from its first six KEYS: {key, running, metrics_jobs,
-- metrics_duration, cancel, channel}. `buckets` are the duration histogram's bounds (strings, seconds); the
-- duration counts from the job's first start to now.
-- #include lib/emit.lua

local function is_final(status)
  return status == 'succeeded' or status == 'failed' or status == 'cancelled' or status == 'expired'
end

local function finish(job, job_id, new_status, now, now_ms, ttl_s, result, err, buckets)
  redis.call('HSET', job.key, 'status', new_status, 'finished_at', now, 'result', result, 'error', err)
  redis.call('EXPIRE', job.key, ttl_s)
  redis.call('SREM', job.running, job_id)
  -- The tenant's active slot (see JobStore.admit) is given back; its key comes from the record.
  local tenant = redis.call('HGET', job.key, 'tenant')
  if tenant then redis.call('SREM', tenant_active_key(tenant), job_id) end
  local jtype = redis.call('HGET', job.key, 'type')
  redis.call('HINCRBY', job.metrics_jobs, jtype .. ':' .. new_status, 1)
  local started_ms = redis.call('HGET', job.key, 'started_ms')
  if started_ms and started_ms ~= '' then
    local duration_s = (tonumber(now_ms) - tonumber(started_ms)) / 1000.0
    for _, bound in ipairs(buckets) do
      if duration_s <= tonumber(bound) then
        redis.call('HINCRBY', job.metrics_duration, jtype .. ':le:' .. bound, 1)
      end
    end
    redis.call('HINCRBYFLOAT', job.metrics_duration, jtype .. ':sum', duration_s)
    redis.call('HINCRBY', job.metrics_duration, jtype .. ':count', 1)
  end
  emit(job.key, job.channel, new_status)
end
