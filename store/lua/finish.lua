-- finish.lua: record a job's final status unless it already has one (the first final status wins, whichever
-- process gets there first). JobStore.finish.
--
-- KEYS[1] job.key               the job's record (store.keys.job)
-- KEYS[2] job.running           the ids of running jobs (store.keys.RUNNING_JOBS)
-- KEYS[3] job.metrics_jobs      jobs per type and status (store.keys.METRICS_JOBS)
-- KEYS[4] job.metrics_duration  the duration histogram (store.keys.METRICS_DURATION)
-- KEYS[5] job.cancel            the job's cancel flag (store.keys.job_cancel)
-- KEYS[6] job.channel           the job's channel (store.keys.job_channel)
-- ARGV[1] job_id
-- ARGV[2] new_status  succeeded | failed | cancelled
-- ARGV[3] now         RFC 3339
-- ARGV[4] now_ms
-- ARGV[5] ttl_s       how long the record lives once final
-- ARGV[6] result      JSON, or ''
-- ARGV[7] err         JSON, or ''
-- ARGV[8..] buckets   the duration histogram's bounds, in seconds
--
-- Returns {'done'} | {'already_final'} | {'gone'} (FinishOutcome).
-- #include lib/finish.lua

local job = {key = KEYS[1], running = KEYS[2], metrics_jobs = KEYS[3], metrics_duration = KEYS[4],
             cancel = KEYS[5], channel = KEYS[6]}
local job_id, new_status, now, now_ms, ttl_s = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local result, err = ARGV[6], ARGV[7]
local buckets = {unpack(ARGV, 8)}

local status = redis.call('HGET', job.key, 'status')
if not status then return {'gone'} end
if is_final(status) then return {'already_final'} end
finish(job, job_id, new_status, now, now_ms, ttl_s, result, err, buckets)
return {'done'}
