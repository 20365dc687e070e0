-- lib/guards.lua: the shared ways a job leaves `running` or `queued` other than its own ending, written once so
-- that begin, mark_running, sweep and preempt cancel, give up and requeue a job the same way. `job` is the table of
-- lib/finish.lua. Each `end_if_*` ends the job and returns true, or changes nothing and returns false.
-- #include lib/finish.lua

-- A requested cancel ends the job `cancelled` (with `err`, '' for none).
local function end_if_cancelled(job, job_id, now, now_ms, ttl_s, err, buckets)
  if redis.call('EXISTS', job.cancel) == 0 then return false end
  finish(job, job_id, 'cancelled', now, now_ms, ttl_s, '', err, buckets)
  return true
end

-- Attempts used up (a drain's requeue does not count one): the job ends `failed` with `err` (worker_lost).
local function end_if_poison(job, job_id, now, now_ms, ttl_s, max_attempts, err, buckets)
  local used = tonumber(redis.call('HGET', job.key, 'attempts') or '0') -
               tonumber(redis.call('HGET', job.key, 'preempted') or '0')
  if used < max_attempts then return false end
  finish(job, job_id, 'failed', now, now_ms, ttl_s, '', err, buckets)
  return true
end

-- Back to `queued` for another attempt; `counter` ('requeues', 'preempted') counts why.
local function requeue(job, job_id, counter)
  redis.call('HSET', job.key, 'status', 'queued', 'worker', '')
  redis.call('HINCRBY', job.key, counter, 1)
  redis.call('SREM', job.running, job_id)
  emit(job.key, job.channel, 'queued')
end
