-- progress.lua: record a running job's progress and announce it. JobStore.set_progress.
--
-- KEYS[1] job_key   the job's record (store.keys.job)
-- KEYS[2] channel   the job's channel (store.keys.job_channel)
-- ARGV[1] progress  JSON, recorded in the job
-- ARGV[2] event     JSON the event carries instead (optional: a search's changed trial, not its whole table)
--
-- Returns {'recorded'} | {'not_running'} (ProgressOutcome).
-- #include lib/emit.lua

local job_key, channel = KEYS[1], KEYS[2]
local progress = ARGV[1]
local event_progress = ARGV[2]

if redis.call('HGET', job_key, 'status') ~= 'running' then return {'not_running'} end
redis.call('HSET', job_key, 'progress', progress)
emit(job_key, channel, 'progress', event_progress)
return {'recorded'}
