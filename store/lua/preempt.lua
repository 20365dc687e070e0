-- preempt.lua: a drain (the worker shuts down): put the job back on the queue from its running attempt; this
-- does not count as a failed attempt (`preempted` += 1). A job whose cancel was requested ends cancelled
-- instead. Only while the job still runs that attempt. Leases.preempt.
--
-- KEYS[1] job.key               the job's record (store.keys.job)
-- KEYS[2] job.running           the ids of running jobs (store.keys.RUNNING_JOBS)
-- KEYS[3] job.metrics_jobs      jobs per type and status (store.keys.METRICS_JOBS)
-- KEYS[4] job.metrics_duration  the duration histogram (store.keys.METRICS_DURATION)
-- KEYS[5] job.cancel            the job's cancel flag (store.keys.job_cancel)
-- KEYS[6] job.channel           the job's channel (store.keys.job_channel)
-- KEYS[7] heartbeat             the attempt's lease, "worker:token" (store.keys.job_heartbeat)
-- ARGV[1] job_id
-- ARGV[2] token      the attempt number
-- ARGV[3] now        RFC 3339
-- ARGV[4] now_ms
-- ARGV[5] ttl_s      how long the record lives once final
-- ARGV[6..] buckets  the duration histogram's bounds, in seconds
--
-- Returns {'requeued'} (send it again) | {'cancelled'} | {'fenced'} (PreemptOutcome).
-- #include lib/fence.lua
-- #include lib/guards.lua

local job = {key = KEYS[1], running = KEYS[2], metrics_jobs = KEYS[3], metrics_duration = KEYS[4],
             cancel = KEYS[5], channel = KEYS[6]}
local heartbeat = KEYS[7]
local job_id, token, now, now_ms, ttl_s = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local buckets = {unpack(ARGV, 6)}

if not holds(job.key, token) then return {'fenced'} end
redis.call('DEL', heartbeat)
if end_if_cancelled(job, job_id, now, now_ms, ttl_s, '', buckets) then return {'cancelled'} end
requeue(job, job_id, 'preempted')
return {'requeued'}
