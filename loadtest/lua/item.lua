-- The item and the configuration of the load test's alternative models: items kept
-- apart from one another, found by sorted sets (sorted_sets.lua: one string per item or
-- one hash of all items) or by search (search.lua). loadtest/models.py builds each
-- script from this file, then shared/watch_history/lua/update_rules.lua (the rules
-- record_progress.lua applies, the one copy), then rules.lua (what the models do with
-- them), then the model's own file.
--
-- The same item table as the store (positions of codec.ITEM_FIELDS, 1-based here) and
-- the same collapsed update (coalesce.py builds it: see record_progress.lua's ARGV).
-- Only where an item is kept and how it is found differ, which is what the load test
-- compares. The contract test (tests/test_loadtest.py) holds every model to
-- tests/model.py.
--
-- Written as the store's scripts are tuned: an EVAL script runs its whole body on every
-- call, so every top-level `local function` is a closure built per call. The hot path
-- (a heartbeat on a stored item) uses only the few defined up front; removals, clears
-- and evictions build theirs on first use (rules.lua's rare()). Items are read as the
-- engine stores them (RESP replies, no JSON wrapper to decode) and changed in place:
-- no copy of an item on the hot path.
--
-- ARGV[1] of every script: JSON [completionThreshold, maxItems, minResumeSeconds,
-- tombstoneTtlMs, indexName, operation]; ARGV[2..]: collapsed updates, asset ids to
-- remove, or what to read.
--
-- Every key a script touches carries the profile's {hash tag} (KEYS[1] is the profile's
-- key prefix), so in cluster mode it all runs on the profile's shard, atomically. Keys
-- past KEYS[1] are derived from it, not declared: the engine allows that within one
-- slot; a server that enforces declared keys would need the index keys in KEYS.

local P = KEYS[1]
local NULL = cjson.null
local CFG = cjson.decode(ARGV[1])
local THRESHOLD, MAX_ITEMS, MIN_RESUME, TOMBSTONE_TTL_MS = CFG[1], CFG[2], CFG[3], CFG[4]
local INDEX, OP = CFG[5], CFG[6]
local META = P .. ':m' -- hash: "wm" the clear-all watermark, "t:<assetId>" tombstones

local F_ID, F_LAST, F_POS, F_DUR, F_FIRST, F_DONE, F_DONE_AT, F_DEVICE = 1, 2, 3, 4, 5, 6, 7, 8
local F_TYPE, F_SPORT, F_SERIES, F_TEAMS, F_SHOW, F_SEASON = 9, 11, 12, 13, 14, 15
local F_DEVICE_AT = 17 -- when deviceId was named, if not at lastWatchedAt (codec.py)
-- update_rules.lua's resume point: when it was set and by what kind of report (the
-- store's item table has them at the same places; 18 is its change stamp, unused here)
local F_POS_AT, F_POS_KIND = 19, 20
local N_FIELDS = 20

local function is_null(v)
  return v == nil or v == NULL
end

-- The packed text of an item (codec.py: trailing nulls left out, holes as null). The
-- item is left with its trailing nulls as nil, which every rule reads as null.
local function pack(item)
  local n = N_FIELDS
  while n > 0 and is_null(item[n]) do
    item[n] = nil
    n = n - 1
  end
  for i = 1, n do
    if item[i] == nil then item[i] = NULL end
  end
  return cjson.encode(item)
end

local function in_progress(item)
  return item[F_DONE] ~= 1 and item[F_POS] >= MIN_RESUME
end
