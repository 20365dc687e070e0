-- fair_enqueue.lua: put a train or batch job in its tenant's fair queue, right before its Celery message is sent
-- (the message is then a ticket: whoever takes it runs the job fair_pick.lua chooses). FairQueues.enqueue.
--
-- KEYS[1] tenants    the tenants with queued jobs on this queue (store.keys.fair_tenants)
-- KEYS[2] flows      the tenant's flows with queued jobs, a ring (store.keys.fair_flows)
-- KEYS[3] flow       the flow's queued job ids, oldest first (store.keys.fair_flow)
-- KEYS[4] pass       each tenant's virtual time (store.keys.fair_pass)
-- KEYS[5] vtime      the virtual time of the last job picked (store.keys.fair_vtime)
-- KEYS[6] picked     job id -> "tenant\nflow" of picked jobs (store.keys.fair_picked)
-- KEYS[7] picked_at  job id -> when it was picked, ms (store.keys.fair_picked_at)
-- ARGV[1] tenant
-- ARGV[2] flow_name  "jobs", or the id of the search whose trial this is
-- ARGV[3] job_id
--
-- Returns {'queued'} | {'already_queued'} (a re-send of a job still in its flow) (FairEnqueueOutcome).

local tenants, flows, flow, pass, vtime, picked, picked_at = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local tenant, flow_name, job_id = ARGV[1], ARGV[2], ARGV[3]

-- back on the queue (a requeue after a lost worker or a drain): no longer a pick in flight
redis.call('HDEL', picked, job_id)
redis.call('ZREM', picked_at, job_id)
if not redis.call('LPOS', flows, flow_name) then redis.call('RPUSH', flows, flow_name) end
if redis.call('SADD', tenants, tenant) == 1 then
  -- A tenant that had nothing queued starts at the queue's virtual time: idle time earns no credit to burst with.
  local now_v = tonumber(redis.call('GET', vtime) or '0')
  if tonumber(redis.call('HGET', pass, tenant) or '0') < now_v then redis.call('HSET', pass, tenant, tostring(now_v)) end
end
if redis.call('LPOS', flow, job_id) then return {'already_queued'} end
redis.call('RPUSH', flow, job_id)
return {'queued'}
