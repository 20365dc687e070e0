-- finish_fenced.lua: record an attempt's final status, only while the job still runs that attempt (an attempt
-- thought dead, or a message redelivered hours later, cannot overwrite what a newer one did). Leases.finish.
--
-- KEYS[1] job.key               the job's record (store.keys.job)
-- KEYS[2] job.running           the ids of running jobs (store.keys.RUNNING_JOBS)
-- KEYS[3] job.metrics_jobs      jobs per type and status (store.keys.METRICS_JOBS)
-- KEYS[4] job.metrics_duration  the duration histogram (store.keys.METRICS_DURATION)
-- KEYS[5] job.cancel            the job's cancel flag (store.keys.job_cancel)
-- KEYS[6] job.channel           the job's channel (store.keys.job_channel)
-- KEYS[7] heartbeat             the attempt's lease, "worker:token" (store.keys.job_heartbeat)
-- ARGV[1] job_id
-- ARGV[2] new_status  succeeded | failed | cancelled
-- ARGV[3] now         RFC 3339
-- ARGV[4] now_ms
-- ARGV[5] ttl_s       how long the record lives once final
-- ARGV[6] result      JSON, or ''
-- ARGV[7] err         JSON, or ''
-- ARGV[8] token       the attempt number
-- ARGV[9..] buckets   the duration histogram's bounds, in seconds
--
-- Returns {'done'} | {'already_final'} | {'fenced'} (another attempt holds it) | {'gone'} (FinishOutcome).
-- #include lib/fence.lua
-- #include lib/finish.lua

local job = {key = KEYS[1], running = KEYS[2], metrics_jobs = KEYS[3], metrics_duration = KEYS[4],
             cancel = KEYS[5], channel = KEYS[6]}
local heartbeat = KEYS[7]
local job_id, new_status, now, now_ms, ttl_s = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local result, err, token = ARGV[6], ARGV[7], ARGV[8]
local buckets = {unpack(ARGV, 9)}

local status = redis.call('HGET', job.key, 'status')
if not status then return {'gone'} end
if is_final(status) then return {'already_final'} end
if not holds(job.key, token) then return {'fenced'} end
finish(job, job_id, new_status, now, now_ms, ttl_s, result, err, buckets)
redis.call('DEL', heartbeat)
return {'done'}
