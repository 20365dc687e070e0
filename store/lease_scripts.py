"""The sources of the training-attempt leases (store/leases.py registers them), read from store/lua/.

KEYS[1..6] of the scripts that end a job are exactly `JobStore._keys()` and the attempt's heartbeat is KEYS[7]
(`Leases` checks that at start-up); every final transition goes through store/lua/lib/finish.lua, so a fenced
finish updates the record, sets, counters and channel exactly as an unfenced one.
"""

from store.lua_loader import source

BEGIN = source("begin")
HEARTBEAT = source("heartbeat")
FINISH_FENCED = source("finish_fenced")
SWEEP = source("sweep")
PREEMPT = source("preempt")
UNREQUEUE = source("unrequeue")
CLAIM = source("claim")
