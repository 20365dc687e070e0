-- claim.lua: the registration claim. Right before registering its model version, an attempt claims the job's
-- registration, only while it holds the job and no cancel was requested; a later attempt that finds the claim
-- taken looks the version up instead of registering a second one, or takes the claim over. Leases.claim_registration.
--
-- KEYS[1] job_key        the job's record (store.keys.job)
-- KEYS[2] claim          the registration claim (store.keys.job_registered)
-- KEYS[3] cancel_flag    the job's cancel flag (store.keys.job_cancel)
-- ARGV[1] token          the attempt number
-- ARGV[2] ttl_s          how long the claim lives
-- ARGV[3] takeover_from  the attempt whose claim may be taken over ('' = none)
--
-- Returns {'claimed'} | {'fenced'} (not the current attempt) | {'cancelled'} | {'held', holder} (attempt
-- `holder` claimed it) (ClaimOutcome).
-- #include lib/fence.lua

local job_key, claim, cancel_flag = KEYS[1], KEYS[2], KEYS[3]
local token, ttl_s, takeover_from = ARGV[1], ARGV[2], ARGV[3]

if not holds(job_key, token) then return {'fenced'} end
if redis.call('EXISTS', cancel_flag) == 1 then return {'cancelled'} end
local holder = redis.call('GET', claim)
if holder and holder ~= token and holder ~= takeover_from then return {'held', holder} end
redis.call('SET', claim, token, 'EX', ttl_s)
return {'claimed'}
