-- lib/keys.lua: the key names a script derives itself, from a job's key or from the tenant in its record.
-- Every other key comes in KEYS. Mirrors store/keys.py (tests/unit/test_keys.py runs these and compares).
-- Deriving keys inside a script only works on a standalone Redis (not a cluster): the tenant is known only here.

local KEY_PREFIX = 'mlq:'
local JOB_PREFIX = KEY_PREFIX .. 'job:'
-- Tenant-scoped keys: mlq:t:{tenant}:{suffix}; no global key starts with mlq:t: (store/keys.py says why).
local TENANT_PREFIX = KEY_PREFIX .. 't:'

local function job_id_of(job_key) return string.sub(job_key, #JOB_PREFIX + 1) end
local function job_log_key(job_key) return job_key .. ':log' end
local function tenant_log_key(tenant) return TENANT_PREFIX .. tenant .. ':log' end
local function tenant_channel_key(tenant) return TENANT_PREFIX .. tenant .. ':events' end
local function tenant_active_key(tenant) return TENANT_PREFIX .. tenant .. ':active' end
