-- mark_running.lua: move a queued (or redelivered running) job to running, attempts += 1; a job whose cancel was
-- requested ends cancelled instead. Unfenced: for jobs without attempt leases (online predictions, searches).
-- JobStore.mark_running / mark_running_in.
--
-- KEYS[1] job.key               the job's record (store.keys.job)
-- KEYS[2] job.running           the ids of running jobs (store.keys.RUNNING_JOBS)
-- KEYS[3] job.metrics_jobs      jobs per type and status (store.keys.METRICS_JOBS)
-- KEYS[4] job.metrics_duration  the duration histogram (store.keys.METRICS_DURATION)
-- KEYS[5] job.cancel            the job's cancel flag (store.keys.job_cancel)
-- KEYS[6] job.channel           the job's channel (store.keys.job_channel)
-- ARGV[1] job_id
-- ARGV[2] worker           the worker's name, kept in the record
-- ARGV[3] now              RFC 3339
-- ARGV[4] now_ms
-- ARGV[5] ttl_s            how long the record lives once final
-- ARGV[6] cancelled_error  JSON error of a job cancelled before it started
-- ARGV[7..] buckets        the duration histogram's bounds, in seconds
--
-- Returns {'started'} | {'missing'} | {'final'} | {'cancelled'} (BeginOutcome).
-- #include lib/guards.lua

local job = {key = KEYS[1], running = KEYS[2], metrics_jobs = KEYS[3], metrics_duration = KEYS[4],
             cancel = KEYS[5], channel = KEYS[6]}
local job_id, worker, now, now_ms, ttl_s, cancelled_error = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local buckets = {unpack(ARGV, 7)}

local status = redis.call('HGET', job.key, 'status')
if not status then return {'missing'} end
if is_final(status) then return {'final'} end
if end_if_cancelled(job, job_id, now, now_ms, ttl_s, cancelled_error, buckets) then return {'cancelled'} end
if redis.call('HGET', job.key, 'started_at') == '' then
  redis.call('HSET', job.key, 'started_at', now, 'started_ms', now_ms)
end
redis.call('HSET', job.key, 'status', 'running', 'worker', worker)
redis.call('HINCRBY', job.key, 'attempts', 1)
redis.call('SADD', job.running, job_id)
redis.call('HINCRBY', job.metrics_jobs, redis.call('HGET', job.key, 'type') .. ':running', 1)
emit(job.key, job.channel, 'running')
return {'started'}
