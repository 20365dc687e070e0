"""The sources of JobStore's status transitions (store/jobs.py registers them), read from store/lua/.

The Lua itself is in store/lua/<name>.lua, each file headed by its KEYS, ARGV and replies; this module only names
the composed sources for the modules that imported them from here. Stdlib only (the API imports it).
"""

from store.lua_loader import source

# The same three numbers are in store/lua/lib/emit.lua (tests/unit/test_lua_scripts.py compares them): JobStore
# writes a job's first `queued` event from Python, the Lua `emit` every later one.
TENANT_LOG_MAXLEN = 10_000  # a tenant's recent job events, kept for clients that reconnect (a few MB)
JOB_LOG_MAXLEN = 1_000  # one job's events (an epoch or a chunk each)
EVENT_PROGRESS_MAX = 4096  # bytes of progress JSON in one event; more is cut to fraction + message (emit.lua)

FINISH = source("finish")
MARK_RUNNING = source("mark_running")
CANCEL = source("cancel")
ADMIT = source("admit")
FINISH_REPLY = source("finish_reply")
CREATE_PREDICT = source("create_predict")
PROGRESS = source("progress")
