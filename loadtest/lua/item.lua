-- The item and the configuration of the load test's two alternative models: one JSON
-- document per item indexed by sorted sets (sorted_sets.lua) or by search
-- (search.lua). loadtest/models.py builds each script from this file, then
-- shared/watch_history/lua/update_rules.lua (the rules record_progress.lua applies, the
-- one copy), then rules.lua (what the models do with them), then the model's own file.
--
-- The same item table as the store (positions of codec.ITEM_FIELDS, 1-based here) and
-- the same collapsed update (coalesce.py builds it: see record_progress.lua's ARGV).
-- Only where an item is kept and how it is found differ, which is what the load test
-- compares. The contract test (tests/test_loadtest.py) holds all three models to
-- tests/model.py.
--
-- ARGV[1] of every script: JSON [completionThreshold, maxItems, minResumeSeconds,
-- tombstoneTtlMs, indexName]; ARGV[2..]: collapsed updates, or asset ids to remove.
--
-- Every key a script touches carries the profile's {hash tag} (KEYS[1] is the profile's
-- key prefix), so in cluster mode it all runs on the profile's shard, atomically. Keys
-- past KEYS[1] are derived from it, not declared: the engine allows that within one
-- slot; a server that enforces declared keys would need the index keys in KEYS.

local P = KEYS[1]
local NULL = cjson.null
local CFG = cjson.decode(ARGV[1])
local THRESHOLD, MAX_ITEMS, MIN_RESUME, TOMBSTONE_TTL_MS = CFG[1], CFG[2], CFG[3], CFG[4]
local META = P .. ':m' -- hash: "wm" the clear-all watermark, "t:<assetId>" tombstones

local F_ID, F_LAST, F_POS, F_DUR, F_FIRST, F_DONE, F_DONE_AT, F_DEVICE = 1, 2, 3, 4, 5, 6, 7, 8
local F_TYPE, F_SPORT, F_SERIES, F_TEAMS, F_SHOW, F_SEASON = 9, 11, 12, 13, 14, 15
local F_DEVICE_AT = 17 -- when deviceId was named, if not at lastWatchedAt (codec.py)
local N_FIELDS = 17

local function is_null(v)
  return v == nil or v == NULL
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- An item's table with its holes as NULL (so that cjson encodes an array).
local function full(item)
  for i = #item + 1, N_FIELDS do item[i] = NULL end
  return item
end

-- The packed text of an item (codec.py: trailing nulls left out).
local function pack(item)
  local n = N_FIELDS
  while n > 0 and is_null(item[n]) do
    item[n] = nil
    n = n - 1
  end
  local text = cjson.encode(item)
  full(item)
  return text
end

local function in_progress(item)
  return item[F_DONE] ~= 1 and item[F_POS] >= MIN_RESUME
end
