-- begin.lua: start a leased attempt of a job (training, batch prediction, optimization). The attempt number (the
-- record's `attempts`) is the fencing token of everything the attempt writes later; the first heartbeat is
-- written here too, so two deliveries of one message can never both start it. Leases.begin.
--
-- KEYS[1] job.key               the job's record (store.keys.job)
-- KEYS[2] job.running           the ids of running jobs (store.keys.RUNNING_JOBS)
-- KEYS[3] job.metrics_jobs      jobs per type and status (store.keys.METRICS_JOBS)
-- KEYS[4] job.metrics_duration  the duration histogram (store.keys.METRICS_DURATION)
-- KEYS[5] job.cancel            the job's cancel flag (store.keys.job_cancel)
-- KEYS[6] job.channel           the job's channel (store.keys.job_channel)
-- KEYS[7] heartbeat             the attempt's lease, "worker:token" (store.keys.job_heartbeat)
-- ARGV[1] job_id
-- ARGV[2] worker           the worker's name
-- ARGV[3] now              RFC 3339
-- ARGV[4] now_ms
-- ARGV[5] ttl_s            how long the record lives once final
-- ARGV[6] cancelled_error  JSON error of a job cancelled before it started
-- ARGV[7] lease_ms         the heartbeat's time to live
-- ARGV[8] max_attempts     MLQ_MAX_ATTEMPTS: attempts (not counting drains) before the job is given up
-- ARGV[9] poison_error     JSON error of a job given up
-- ARGV[10..] buckets       the duration histogram's bounds, in seconds
--
-- Returns {'started', token} | {'missing'} | {'final'} | {'cancelled'} | {'running_elsewhere'} (a live attempt
-- holds it) | {'poison'} (attempts used up: ended failed) (BeginOutcome).
-- #include lib/guards.lua

local job = {key = KEYS[1], running = KEYS[2], metrics_jobs = KEYS[3], metrics_duration = KEYS[4],
             cancel = KEYS[5], channel = KEYS[6]}
local heartbeat = KEYS[7]
local job_id, worker, now, now_ms, ttl_s = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local cancelled_error, lease_ms, max_attempts, poison_error = ARGV[6], ARGV[7], tonumber(ARGV[8]), ARGV[9]
local buckets = {unpack(ARGV, 10)}

local status = redis.call('HGET', job.key, 'status')
if not status then return {'missing'} end
if is_final(status) then return {'final'} end
if end_if_cancelled(job, job_id, now, now_ms, ttl_s, cancelled_error, buckets) then return {'cancelled'} end
if status == 'running' and redis.call('EXISTS', heartbeat) == 1 then return {'running_elsewhere'} end
-- queued, or running with a dead holder whose message came back before a sweeper noticed
if end_if_poison(job, job_id, now, now_ms, ttl_s, max_attempts, poison_error, buckets) then return {'poison'} end
if (redis.call('HGET', job.key, 'started_at') or '') == '' then
  redis.call('HSET', job.key, 'started_at', now, 'started_ms', now_ms)
end
local token = redis.call('HINCRBY', job.key, 'attempts', 1)
redis.call('HSET', job.key, 'status', 'running', 'worker', worker, 'attempt_started_ms', now_ms)
redis.call('SADD', job.running, job_id)
redis.call('HINCRBY', job.metrics_jobs, redis.call('HGET', job.key, 'type') .. ':running', 1)
redis.call('SET', heartbeat, worker .. ':' .. token, 'PX', lease_ms)
emit(job.key, job.channel, 'running')
return {'started', token}
