-- admit.lua: claim one of a tenant's active-job slots for a job about to be created (check-and-add, atomic).
-- JobStore.admit; the slot is given back by lib/finish.lua or JobStore.release.
--
-- KEYS[1] active_set  the tenant's queued + running job ids (store.keys.tenant_active)
-- ARGV[1] job_id
-- ARGV[2] max_active  MLQ_MAX_ACTIVE_JOBS
--
-- Returns {'admitted'} (also when the job already holds a slot) | {'full'} (AdmitOutcome).

local active_set = KEYS[1]
local job_id, max_active = ARGV[1], tonumber(ARGV[2])

if redis.call('SISMEMBER', active_set, job_id) == 1 then return {'admitted'} end
if redis.call('SCARD', active_set) >= max_active then return {'full'} end
redis.call('SADD', active_set, job_id)
return {'admitted'}
