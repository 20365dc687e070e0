-- finish_reply.lua: an online prediction's answer. Finish the job like finish.lua (unless it is already final),
-- then push the record as it now is (HGETALL as a JSON array) to the job's reply list, where the API request that
-- submitted it waits with BLPOP. JobStore.finish_and_reply_in.
--
-- KEYS[1] job.key               the job's record (store.keys.job)
-- KEYS[2] job.running           the ids of running jobs (store.keys.RUNNING_JOBS)
-- KEYS[3] job.metrics_jobs      jobs per type and status (store.keys.METRICS_JOBS)
-- KEYS[4] job.metrics_duration  the duration histogram (store.keys.METRICS_DURATION)
-- KEYS[5] job.cancel            the job's cancel flag (store.keys.job_cancel)
-- KEYS[6] job.channel           the job's channel (store.keys.job_channel)
-- KEYS[7] reply_list  the submitter's reply list (store.keys.job_reply)
-- ARGV[1] job_id
-- ARGV[2] new_status  succeeded | failed | cancelled | expired (a prediction past its deadline)
-- ARGV[3] now         RFC 3339
-- ARGV[4] now_ms
-- ARGV[5] ttl_s       how long the record lives once final
-- ARGV[6] result      JSON, or ''
-- ARGV[7] err         JSON, or ''
-- ARGV[8..] buckets   the duration histogram's bounds, in seconds
--
-- Returns {'done'} | {'already_final'} (the record is pushed either way) | {'gone'} (nothing pushed: there is no
-- record) (FinishOutcome).
-- #include lib/finish.lua

local job = {key = KEYS[1], running = KEYS[2], metrics_jobs = KEYS[3], metrics_duration = KEYS[4],
             cancel = KEYS[5], channel = KEYS[6]}
local reply_list = KEYS[7]
local job_id, new_status, now, now_ms, ttl_s = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local result, err = ARGV[6], ARGV[7]
local buckets = {unpack(ARGV, 8)}

local REPLY_TTL_MS = 60000  -- the submitter waits at most 30 s; an unread reply goes soon after

local function push_reply()
  redis.call('RPUSH', reply_list, cjson.encode(redis.call('HGETALL', job.key)))
  redis.call('PEXPIRE', reply_list, REPLY_TTL_MS)
end

local status = redis.call('HGET', job.key, 'status')
if not status then return {'gone'} end
if is_final(status) then
  push_reply()
  return {'already_final'}
end
finish(job, job_id, new_status, now, now_ms, ttl_s, result, err, buckets)
push_reply()
return {'done'}
