-- heartbeat.lua: refresh an attempt's lease, only while the job still runs that attempt. Leases.heartbeat.
--
-- KEYS[1] job_key    the job's record (store.keys.job)
-- KEYS[2] heartbeat  the attempt's lease (store.keys.job_heartbeat)
-- ARGV[1] token      the attempt number
-- ARGV[2] holder     the lease's value, "worker:token"
-- ARGV[3] lease_ms   its time to live
--
-- Returns {'refreshed'} | {'lost'} (final, requeued, or a newer attempt runs) (HeartbeatOutcome).
-- #include lib/fence.lua

local job_key, heartbeat = KEYS[1], KEYS[2]
local token, holder, lease_ms = ARGV[1], ARGV[2], ARGV[3]

if not holds(job_key, token) then return {'lost'} end
redis.call('SET', heartbeat, holder, 'PX', lease_ms)
return {'refreshed'}
