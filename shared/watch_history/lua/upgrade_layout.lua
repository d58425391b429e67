-- Bring one document to the current layout (LAYOUT, in common.lua) without changing
-- what any read answers. The operator command (watch_history/upgrade.py) runs it on
-- every key of a cluster; the writing scripts upgrade a document the same way on its
-- first write (read_head), so this is for the profiles nobody writes to.
--
-- ARGV[1]: "1" for a dry run (decide, change nothing), else "0".
-- Returns one letter (store.UpgradeOutcome):
--   "u" upgraded (in a dry run: would be)
--   "c" already in the current layout
--   "n" not a history document: no such key, another type, or JSON without a layout
--       number and a history array
--   "f" a layout from the future, written by newer code: left as it is
--
-- The step is the code the writing scripts run for it (rare().upgrade in common.lua),
-- never a copy of it: layouts 1 and 2 go to layout 3 at once.

local dry = ARGV[1] == '1'

-- redis.pcall: a key of another type answers WRONGTYPE instead of failing the script.
local raw = redis.pcall('JSON.GET', K, '$.v')
if type(raw) ~= 'string' then return 'n' end -- no key (false), or not JSON (an error)
local layout = cjson.decode(raw)[1]
if type(layout) ~= 'number' then return 'n' end
-- JSON.TYPE answers a bulk string on RedisJSON, a status ({ok = ...} in Lua) on valkey-json
local h_type = redis.call('JSON.TYPE', K, '$.h')[1]
if type(h_type) == 'table' then h_type = h_type.ok end
if h_type ~= 'array' then return 'n' end
if layout > LAYOUT then return 'f' end
if layout == LAYOUT then return 'c' end
if dry then return 'u' end

-- 1 or 2 -> 3 (a layout-1 document gets the changes feed's records empty and "cs" 0:
-- no change stamped yet; its first write after this sets the horizon, as it would
-- have on the layout-1 document)
rare().upgrade()
return 'u'
