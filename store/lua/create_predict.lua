-- create_predict.lua: a new online prediction: its record, its place in the tenant's list, the queued counter and
-- its request on the inference stream, in one script. JobStore.create_and_enqueue_in runs it with EVAL, not
-- EVALSHA: a pipeline with a registered script first asks SCRIPT EXISTS, one more round trip on the hottest path.
-- With a queue cap (the model's serving policy `max_queued`, store/serving.py), the request is counted in the
-- model's queued set, and refused when the set already holds `cap` requests (the worker removes each one it takes).
--
-- KEYS[1] job_key       the job's record (store.keys.job)
-- KEYS[2] tenant_jobs   the tenant's job list (store.keys.tenant_jobs)
-- KEYS[3] metrics_jobs  jobs per type and status (store.keys.METRICS_JOBS)
-- KEYS[4] stream        the inference requests: one of the two lanes (store.keys.INFERENCE_STREAM[_HIGH])
-- KEYS[5] queued        the model's queued predictions (store.keys.queued_predictions)
-- ARGV[1] job_id
-- ARGV[2] created_ms    the list's score
-- ARGV[3] field         the stream entry's one field
-- ARGV[4] request       its value: the PredictRequest
-- ARGV[5] cap           the model's max_queued; 0: no cap, the queued set is not touched
-- ARGV[6] stale_ms      a counted request older than this is no longer counted (its worker lost it)
-- ARGV[7..] record      the record's field/value pairs (JobStore.new_record)
--
-- Returns {'created'} | {'full', queued} (nothing written) (CreateOutcome).

local job_key, tenant_jobs, metrics_jobs, stream, queued = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local job_id, created_ms, field, request = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local cap, stale_ms = tonumber(ARGV[5]), tonumber(ARGV[6])
local record = {unpack(ARGV, 7)}

if cap > 0 then
  redis.call('ZREMRANGEBYSCORE', queued, '-inf', tonumber(created_ms) - stale_ms)
  local n = redis.call('ZCARD', queued)
  if n >= cap then return {'full', n} end
  redis.call('ZADD', queued, created_ms, job_id)
  redis.call('PEXPIRE', queued, stale_ms)
end
redis.call('HSET', job_key, unpack(record))
redis.call('ZADD', tenant_jobs, created_ms, job_id)
redis.call('HINCRBY', metrics_jobs, 'predict:queued', 1)
redis.call('XADD', stream, '*', field, request)
return {'created'}
