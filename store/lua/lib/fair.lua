-- lib/fair.lua: a tenant's fair-queue keys and its next queued job, for fair_pick.lua. `q` is
-- {tenants = the queue's tenants set, tenant_prefix, queue_suffix, job_prefix} (see fair_pick.lua's header).

local function fair_flows_key(q, t) return q.tenant_prefix .. t .. ':' .. q.queue_suffix .. 'flows' end
local function fair_flow_key(q, t, f) return q.tenant_prefix .. t .. ':' .. q.queue_suffix .. 'flow:' .. f end
local function fair_status(q, id) return redis.call('HGET', q.job_prefix .. id, 'status') end
-- Order of {tenant, virtual time} entries: the lowest time first, then the name, the same way everywhere.
local function fair_before(a, b)
  if a[2] ~= b[2] then return a[2] < b[2] end
  return a[1] < b[1]
end
local function fair_split(where) return string.match(where or '', '^(.-)\n(.*)$') end

-- A tenant's next queued job, {id, flow}: its flows in turn (the served flow goes to the back of the ring);
-- entries no longer queued (cancelled, expired) are dropped on the way. nil when it has none.
local function fair_next_job(q, t)
  local ring = fair_flows_key(q, t)
  while true do
    local f = redis.call('LINDEX', ring, 0)
    if not f then
      redis.call('SREM', q.tenants, t)
      return nil
    end
    local list = fair_flow_key(q, t, f)
    local id = redis.call('LPOP', list)
    if not id then
      redis.call('LREM', ring, 1, f)
    elseif fair_status(q, id) == 'queued' then
      redis.call('LREM', ring, 1, f)
      if redis.call('LLEN', list) > 0 then redis.call('RPUSH', ring, f) end
      if redis.call('LLEN', ring) == 0 then redis.call('SREM', q.tenants, t) end
      return {id, f}
    end
  end
end

-- Whether a tenant (at its cap) still has a queued job; the entries that are not queued any more are dropped.
local function fair_has_queued(q, t)
  for _, f in ipairs(redis.call('LRANGE', fair_flows_key(q, t), 0, -1)) do
    for _, id in ipairs(redis.call('LRANGE', fair_flow_key(q, t, f), 0, -1)) do
      if fair_status(q, id) == 'queued' then return true end
      redis.call('LREM', fair_flow_key(q, t, f), 0, id)
    end
    redis.call('LREM', fair_flows_key(q, t), 0, f)
  end
  redis.call('SREM', q.tenants, t)
  return false
end
