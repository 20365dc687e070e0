-- lib/emit.lua: announce a change of a job. PUBLISH `kind` on the job's channel (wakes waiters) and, for every
-- job type but online predictions (hundreds a second; their answer is the reply list), append an entry to the
-- job's event log and to its tenant's (Redis Streams: their ids are the SSE event ids, so a client that
-- reconnects with Last-Event-ID misses nothing), plus a PUBLISH of the job id on the tenant's channel.
-- `kind` is queued | running | progress | cancel_requested | succeeded | failed | cancelled.
-- `event_progress` (optional) is what the event carries instead of the record's progress (a search's events carry
-- the changed trial, its record the whole table). Whatever it is, an event's progress is at most
-- EVENT_PROGRESS_MAX bytes: past that it is cut to its fraction and message, with `truncated: true` (the whole
-- progress is one GET of the job away). Every other field of an event is an id, a name or a status: all short.
-- #include lib/keys.lua

-- store/job_scripts.py has the same two numbers (the first `queued` entry is written from Python).
local JOB_LOG_MAXLEN = 1000  -- one job's events (an epoch or a chunk each)
local TENANT_LOG_MAXLEN = 10000  -- a tenant's recent job events, kept for clients that reconnect (a few MB)
local EVENT_PROGRESS_MAX = 4096  -- bytes of progress JSON in one event: bounds every log (store/job_scripts.py)

-- The longest prefix of `text` of at most `limit` bytes that does not end inside a UTF-8 character.
local function utf8_prefix(text, limit)
  if #text <= limit then return text end
  local cut = string.sub(text, 1, limit)
  for i = #cut, math.max(1, #cut - 3), -1 do
    local byte = string.byte(cut, i)
    if byte < 128 then return cut end  -- ASCII: complete
    if byte >= 192 then  -- the lead byte of the last character: is the character whole?
      local size = (byte >= 240 and 4) or (byte >= 224 and 3) or 2
      if #cut - i + 1 < size then return string.sub(cut, 1, i - 1) end
      return cut
    end
  end
  return cut
end

local function bounded_progress(progress)
  if not progress or #progress <= EVENT_PROGRESS_MAX then return progress end
  local ok, parsed = pcall(cjson.decode, progress)
  local out = {truncated = true}
  if ok and type(parsed) == 'table' then
    if type(parsed.fraction) == 'number' then out.fraction = parsed.fraction end
    if type(parsed.message) == 'string' then
      out.message = utf8_prefix(parsed.message, 200)
    end
  end
  return cjson.encode(out)
end

local function emit(job_key, channel, kind, event_progress)
  local record = redis.call('HMGET', job_key, 'type', 'tenant', 'status', 'progress', 'model')
  local jtype, tenant, status, progress, model = record[1], record[2], record[3], record[4], record[5]
  if jtype and jtype ~= 'predict' and tenant then
    progress = bounded_progress(event_progress or progress)
    local job_id = job_id_of(job_key)
    local log = job_log_key(job_key)
    redis.call('XADD', log, 'MAXLEN', '~', JOB_LOG_MAXLEN, '*',
               'event', kind, 'status', status, 'progress', progress or '')
    local ttl = redis.call('TTL', job_key)
    if ttl > 0 then redis.call('EXPIRE', log, ttl) end
    redis.call('XADD', tenant_log_key(tenant), 'MAXLEN', '~', TENANT_LOG_MAXLEN, '*',
               'job', job_id, 'event', kind, 'type', jtype, 'model', model or '', 'status', status,
               'progress', progress or '')
    redis.call('PUBLISH', tenant_channel_key(tenant), job_id)
  end
  redis.call('PUBLISH', channel, kind)
end
