-- unrequeue.lua: the message could not be sent again after a requeue (sweep.lua, preempt.lua): make the job look
-- running with a dead holder again, so a later sweep retries. Leases.unrequeue.
--
-- KEYS[1] job_key      the job's record (store.keys.job)
-- KEYS[2] running_set  the ids of running jobs (store.keys.RUNNING_JOBS)
-- ARGV[1] job_id
-- ARGV[2] attempts     the record's attempts when it was requeued
--
-- Returns {'restored'} | {'fenced'} (it started again, or ended, meanwhile) (UnrequeueOutcome).

local job_key, running_set = KEYS[1], KEYS[2]
local job_id, attempts = ARGV[1], ARGV[2]

if redis.call('HGET', job_key, 'status') ~= 'queued' or redis.call('HGET', job_key, 'attempts') ~= attempts then
  return {'fenced'}
end
redis.call('HSET', job_key, 'status', 'running')
redis.call('SADD', running_set, job_id)
return {'restored'}
