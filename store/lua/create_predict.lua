-- create_predict.lua: a new online prediction: its record, its place in the tenant's list, the queued counter and
-- its request on the inference stream, in one script. JobStore.create_and_enqueue_in runs it with EVAL, not
-- EVALSHA: a pipeline with a registered script first asks SCRIPT EXISTS, one more round trip on the hottest path.
--
-- KEYS[1] job_key       the job's record (store.keys.job)
-- KEYS[2] tenant_jobs   the tenant's job list (store.keys.tenant_jobs)
-- KEYS[3] metrics_jobs  jobs per type and status (store.keys.METRICS_JOBS)
-- KEYS[4] stream        the inference requests (store.keys.INFERENCE_STREAM)
-- ARGV[1] job_id
-- ARGV[2] created_ms    the list's score
-- ARGV[3] field         the stream entry's one field
-- ARGV[4] request       its value: the PredictRequest
-- ARGV[5..] record      the record's field/value pairs (JobStore.new_record)
--
-- Returns {'created'} (CreateOutcome).

local job_key, tenant_jobs, metrics_jobs, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local job_id, created_ms, field, request = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local record = {unpack(ARGV, 5)}

redis.call('HSET', job_key, unpack(record))
redis.call('ZADD', tenant_jobs, created_ms, job_id)
redis.call('HINCRBY', metrics_jobs, 'predict:queued', 1)
redis.call('XADD', stream, '*', field, request)
return {'created'}
