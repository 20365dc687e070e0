-- cancel.lua: request a job's cancellation. The flag is set for the worker to see; a queued job ends cancelled
-- at once (its message is skipped when it comes), a running one is told on its channel. JobStore.request_cancel.
--
-- KEYS[1] job.key               the job's record (store.keys.job)
-- KEYS[2] job.running           the ids of running jobs (store.keys.RUNNING_JOBS)
-- KEYS[3] job.metrics_jobs      jobs per type and status (store.keys.METRICS_JOBS)
-- KEYS[4] job.metrics_duration  the duration histogram (store.keys.METRICS_DURATION)
-- KEYS[5] job.cancel            the job's cancel flag (store.keys.job_cancel)
-- KEYS[6] job.channel           the job's channel (store.keys.job_channel)
-- ARGV[1] job_id
-- ARGV[2] now              RFC 3339
-- ARGV[3] now_ms
-- ARGV[4] ttl_s            how long the flag and a cancelled record live
-- ARGV[5] cancelled_error  JSON error of a job cancelled before it started
-- ARGV[6..] buckets        the duration histogram's bounds, in seconds
--
-- Returns {'cancelled'} (it was queued) | {'requested'} (it runs: its worker stops it) | {'already_final'} |
-- {'gone'} (CancelOutcome).
-- #include lib/finish.lua

local job = {key = KEYS[1], running = KEYS[2], metrics_jobs = KEYS[3], metrics_duration = KEYS[4],
             cancel = KEYS[5], channel = KEYS[6]}
local job_id, now, now_ms, ttl_s, cancelled_error = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local buckets = {unpack(ARGV, 6)}

local status = redis.call('HGET', job.key, 'status')
if not status then return {'gone'} end
if is_final(status) then return {'already_final'} end
redis.call('SET', job.cancel, '1', 'EX', ttl_s)
if status == 'queued' then
  finish(job, job_id, 'cancelled', now, now_ms, ttl_s, '', cancelled_error, buckets)
  return {'cancelled'}
end
emit(job.key, job.channel, 'cancel_requested')
return {'requested'}
