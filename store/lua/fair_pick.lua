-- fair_pick.lua: choose the job a worker runs next on the train or batch queue: the tenant with the lowest virtual
-- time (it grows by 1/weight per job picked) that is under its running cap, then that tenant's flows in turn (its
-- other jobs, each of its searches), oldest job first. Entries no longer queued (cancelled, expired) are dropped.
-- FairQueues.pick.
--
-- KEYS[1] tenants    the tenants with queued jobs on this queue (store.keys.fair_tenants)
-- KEYS[2] pass       each tenant's virtual time (store.keys.fair_pass)
-- KEYS[3] vtime      the virtual time of the last job picked (store.keys.fair_vtime)
-- KEYS[4] picked     job id -> "tenant\nflow" of picked jobs (store.keys.fair_picked)
-- KEYS[5] picked_at  job id -> when it was picked, ms (store.keys.fair_picked_at)
-- KEYS[6] running    the ids of running jobs (store.keys.RUNNING_JOBS)
-- ARGV[1] tenant_prefix  a tenant's keys are tenant_prefix .. tenant .. ':' .. queue_suffix .. 'flows' | 'flow:' .. f
-- ARGV[2] queue_suffix   store.keys.fair_suffix(queue)
-- ARGV[3] job_prefix     a job's record is job_prefix .. id (store.keys.job)
-- ARGV[4] now_ms
-- ARGV[5] repair_ms      a job picked this long ago and still queued (its worker died before starting it) goes back
-- ARGV[6] cap            MLQ_MAX_RUNNING_PER_TENANT; 0: no cap
-- ARGV[7] types          comma-separated job types of this queue (they count against the cap)
-- ARGV[8] weights        JSON {tenant: weight} (MLQ_TENANT_WEIGHTS); a tenant not named weighs 1
--
-- Returns {'picked', job_id} | {'wait'} (only tenants at their cap have queued jobs) | {'empty'} (FairPickOutcome).
-- #include lib/fair.lua

local tenants, pass, vtime, picked, picked_at, running = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local tenant_prefix, queue_suffix, job_prefix, now_ms = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local repair_ms, cap, types, weights = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7], cjson.decode(ARGV[8])

local q = {tenants = tenants, tenant_prefix = tenant_prefix, queue_suffix = queue_suffix, job_prefix = job_prefix}

-- 1. A job picked long ago that is still queued was never started (its worker died right after the pick): it goes
--    back to the front of its flow. Picks that did start (or ended) are forgotten.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', picked_at, '-inf', now_ms - repair_ms)) do
  local t, f = fair_split(redis.call('HGET', picked, id))
  redis.call('HDEL', picked, id)
  redis.call('ZREM', picked_at, id)
  if t and fair_status(q, id) == 'queued' then
    if not redis.call('LPOS', fair_flow_key(q, t, f), id) then redis.call('LPUSH', fair_flow_key(q, t, f), id) end
    if not redis.call('LPOS', fair_flows_key(q, t), f) then redis.call('LPUSH', fair_flows_key(q, t), f) end
    redis.call('SADD', tenants, t)
  end
end

-- 2. What each tenant runs on this queue: its running jobs of these types, and its picks not started yet.
local wanted, runs = {}, {}
for ty in string.gmatch(types, '[^,]+') do wanted[ty] = true end
for _, id in ipairs(redis.call('SMEMBERS', running)) do
  local f = redis.call('HMGET', job_prefix .. id, 'tenant', 'type', 'status')
  if f[1] and f[3] == 'running' and wanted[f[2]] then runs[f[1]] = (runs[f[1]] or 0) + 1 end
end
for _, id in ipairs(redis.call('ZRANGE', picked_at, 0, -1)) do
  local t = fair_split(redis.call('HGET', picked, id))
  if t and fair_status(q, id) == 'queued' then runs[t] = (runs[t] or 0) + 1 end
end

-- 3. The tenants by virtual time (then name, so that ties are decided the same way everywhere).
local order = {}
for _, t in ipairs(redis.call('SMEMBERS', tenants)) do
  table.insert(order, {t, tonumber(redis.call('HGET', pass, t) or '0')})
end
table.sort(order, fair_before)
local waiting = false
for _, entry in ipairs(order) do
  local t, v = entry[1], entry[2]
  if cap > 0 and (runs[t] or 0) >= cap then
    waiting = waiting or fair_has_queued(q, t)
  else
    local got = fair_next_job(q, t)
    if got then
      redis.call('HSET', pass, t, tostring(v + 1 / tonumber(weights[t] or 1)))
      if v > tonumber(redis.call('GET', vtime) or '0') then redis.call('SET', vtime, tostring(v)) end
      redis.call('HSET', picked, got[1], t .. '\n' .. got[2])
      redis.call('ZADD', picked_at, now_ms, got[1])
      return {'picked', got[1]}
    end
  end
end
if waiting then return {'wait'} end
return {'empty'}
