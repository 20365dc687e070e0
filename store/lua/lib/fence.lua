-- lib/fence.lua: the fencing check of every script an attempt runs on its own job (heartbeat, claim, preempt,
-- finish_fenced): the job runs and its attempt counter is still this attempt's token.

local function holds(job_key, token)
  return redis.call('HGET', job_key, 'status') == 'running' and redis.call('HGET', job_key, 'attempts') == token
end
