-- sweep.lua: decide about one running leased job whose heartbeat may have expired (only one sweeper wins).
-- Cancelled → cancelled; attempts used up → failed (worker_lost); past its time limit → failed (time_limit);
-- otherwise back to queued, and the sweeper sends its message again. Leases.sweep_one.
--
-- KEYS[1] job.key               the job's record (store.keys.job)
-- KEYS[2] job.running           the ids of running jobs (store.keys.RUNNING_JOBS)
-- KEYS[3] job.metrics_jobs      jobs per type and status (store.keys.METRICS_JOBS)
-- KEYS[4] job.metrics_duration  the duration histogram (store.keys.METRICS_DURATION)
-- KEYS[5] job.cancel            the job's cancel flag (store.keys.job_cancel)
-- KEYS[6] job.channel           the job's channel (store.keys.job_channel)
-- KEYS[7] heartbeat             the attempt's lease, "worker:token" (store.keys.job_heartbeat)
-- ARGV[1] job_id
-- ARGV[2] now               RFC 3339
-- ARGV[3] now_ms
-- ARGV[4] ttl_s             how long the record lives once final
-- ARGV[5] cancelled_error   JSON error of a cancelled job whose worker was lost
-- ARGV[6] max_attempts      MLQ_MAX_ATTEMPTS
-- ARGV[7] poison_error      JSON error of a job given up
-- ARGV[8] time_limit_ms     MLQ_JOB_TIME_LIMIT_S in ms, per attempt; 0 = none
-- ARGV[9] time_limit_error  JSON error of a job past its time limit
-- ARGV[10..] buckets        the duration histogram's bounds, in seconds
--
-- Returns {'requeued'} (send it again) | {'cancelled'} | {'poison'} | {'time_limit'} | {'alive'} (its lease
-- holds) | {'not_running'} (dropped from the running set) | {'not_leased'} (a job type without leases)
-- (SweepOutcome).
-- #include lib/guards.lua

local job = {key = KEYS[1], running = KEYS[2], metrics_jobs = KEYS[3], metrics_duration = KEYS[4],
             cancel = KEYS[5], channel = KEYS[6]}
local heartbeat = KEYS[7]
local job_id, now, now_ms, ttl_s, cancelled_error = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local max_attempts, poison_error = tonumber(ARGV[6]), ARGV[7]
local time_limit_ms, time_limit_error = tonumber(ARGV[8]), ARGV[9]
local buckets = {unpack(ARGV, 10)}

local LEASED_TYPES = {train = true, batch_predict = true, optimize = true, rollout = true}

local status = redis.call('HGET', job.key, 'status')
if status ~= 'running' then
  redis.call('SREM', job.running, job_id)
  return {'not_running'}
end
if not LEASED_TYPES[redis.call('HGET', job.key, 'type')] then return {'not_leased'} end
if redis.call('EXISTS', heartbeat) == 1 then return {'alive'} end
if end_if_cancelled(job, job_id, now, now_ms, ttl_s, cancelled_error, buckets) then return {'cancelled'} end
if end_if_poison(job, job_id, now, now_ms, ttl_s, max_attempts, poison_error, buckets) then return {'poison'} end
local attempt_started_ms = tonumber(redis.call('HGET', job.key, 'attempt_started_ms') or '0') or 0
if time_limit_ms > 0 and attempt_started_ms > 0 and now_ms - attempt_started_ms >= time_limit_ms then
  finish(job, job_id, 'failed', now, now_ms, ttl_s, '', time_limit_error, buckets)
  return {'time_limit'}
end
requeue(job, job_id, 'requeues')
return {'requeued'}
