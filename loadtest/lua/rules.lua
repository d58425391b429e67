-- The rules of the data model (README "Data model and rules", 2-5) on ONE item, for the
-- load test's two alternative models: one JSON document per item indexed by sorted sets
-- (sorted_sets.lua) or by search (search.lua). loadtest/models.py prepends this file
-- to each of them.
--
-- A port of the rule half of shared/watch_history/lua/record_progress.lua: the same
-- item table (positions of codec.ITEM_FIELDS, 1-based here) and the same collapsed
-- update (coalesce.py builds it: see record_progress.lua's ARGV). Only where an item is
-- kept and how it is found differ, which is what the load test compares. The contract
-- test (tests/test_loadtest.py) holds all three models to tests/model.py.
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

local U_ID, U_TIME, U_POS, U_DUR, U_COMPLETE, U_DEVICE = 1, 2, 3, 4, 5, 6
local U_META_FIRST, U_META_LAST = 7, 14 -- same order as F_TYPE .. F_EPISODE
local U_EARLIEST, U_LAST_COMPLETING, U_UNDECIDED, U_DEVICE_AT = 15, 16, 17, 18

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

local function reaches_end(position, duration)
  return not is_null(duration) and duration > 0 and position >= THRESHOLD * duration
end

local function completes(u, duration)
  return u[U_COMPLETE] == 1 or reaches_end(u[U_POS], duration)
end

-- completedAt: the newest time at which any applied record completed the asset.
local function completed_at(item, u, cutoff)
  local at = item[F_DONE_AT]
  local function consider(t)
    if t > cutoff and (is_null(at) or t > at) then at = t end
  end
  if completes(u, item[F_DUR]) then consider(u[U_TIME]) end
  if not is_null(u[U_LAST_COMPLETING]) then consider(u[U_LAST_COMPLETING]) end
  if not is_null(u[U_UNDECIDED]) then
    for _, rec in ipairs(u[U_UNDECIDED]) do
      if reaches_end(rec[2], item[F_DUR]) then consider(rec[1]) end
    end
  end
  return at
end

local function copy_asset_fields(item, u, only_missing)
  for i = U_META_FIRST, U_META_LAST do
    local v = u[i]
    local f = F_TYPE + (i - U_META_FIRST)
    if not is_null(v) and (not only_missing or is_null(item[f])) then item[f] = v end
  end
  if not is_null(u[U_DUR]) and (not only_missing or is_null(item[F_DUR])) then
    item[F_DUR] = u[U_DUR]
  end
end

-- deviceId: the device named by the newest update that names one (equal times: the
-- greater id), as record_progress.lua's take_device. Call before F_LAST changes.
local function take_device(item, u, new_last)
  local stored_at = nil
  if not is_null(item[F_DEVICE]) then
    stored_at = is_null(item[F_DEVICE_AT]) and item[F_LAST] or item[F_DEVICE_AT]
  end
  if not is_null(u[U_DEVICE]) then
    local at = is_null(u[U_DEVICE_AT]) and u[U_TIME] or u[U_DEVICE_AT]
    if stored_at == nil or at > stored_at or (at == stored_at and u[U_DEVICE] > item[F_DEVICE]) then
      item[F_DEVICE] = u[U_DEVICE]
      stored_at = at
    end
  end
  if stored_at == nil or stored_at == new_last then item[F_DEVICE_AT] = NULL else item[F_DEVICE_AT] = stored_at end
end

local function apply_newest(item, u, cutoff)
  copy_asset_fields(item, u, false)
  take_device(item, u, u[U_TIME])
  item[F_LAST] = u[U_TIME]
  item[F_POS] = u[U_POS]
  item[F_DONE] = completes(u, item[F_DUR]) and 1 or 0
  item[F_DONE_AT] = completed_at(item, u, cutoff)
end

-- One collapsed update against the stored item (a table, or nil when there is none).
-- Returns the status letter (record_progress.lua's: a, s, i, x) and the item to write
-- (nil when nothing changed). ``cutoff``: max(the asset's tombstone, the watermark).
local function decide(u, stored, cutoff)
  if u[U_TIME] <= cutoff then return 'i', nil end
  if u[U_EARLIEST] <= cutoff then return 'x', nil end
  if stored == nil then
    local item = full({u[U_ID], 0, 0, NULL, u[U_EARLIEST], 0, NULL, NULL})
    apply_newest(item, u, cutoff)
    return 'a', item
  end
  local before = pack(stored)
  local item = cjson.decode(before)
  full(item)
  if u[U_EARLIEST] < item[F_FIRST] then item[F_FIRST] = u[U_EARLIEST] end
  if u[U_TIME] > item[F_LAST] then
    apply_newest(item, u, cutoff)
    return 'a', item
  end
  copy_asset_fields(item, u, true)
  take_device(item, u, item[F_LAST])
  item[F_DONE_AT] = completed_at(item, u, cutoff)
  if pack(item) == before then return 's', nil end
  return 's', item
end

-- The watermark and the tombstones of some assets, in one call.
local function cutoffs(asset_ids)
  local fields = {'wm'}
  for i, id in ipairs(asset_ids) do fields[i + 1] = 't:' .. id end
  local values = redis.call('HMGET', META, unpack(fields))
  local wm = tonumber(values[1]) or 0
  local out = {}
  for i, id in ipairs(asset_ids) do
    out[id] = math.max(tonumber(values[i + 1]) or 0, wm)
  end
  return wm, out
end

-- Leave (or raise) an asset's tombstone at ``at``.
local function tombstone(asset_id, at)
  local old = tonumber(redis.call('HGET', META, 't:' .. asset_id)) or 0
  if at > old then redis.call('HSET', META, 't:' .. asset_id, string.format('%d', at)) end
end

-- Forget tombstones older than ``limit`` (inclusive when ``inclusive``).
local function prune_tombstones(limit, inclusive)
  local all = redis.call('HGETALL', META)
  for i = 1, #all, 2 do
    local name, at = all[i], tonumber(all[i + 1])
    if name:sub(1, 2) == 't:' and (at < limit or (inclusive and at == limit)) then
      redis.call('HDEL', META, name)
    end
  end
end

-- The collapsed updates of ARGV[2..], decoded.
local function updates()
  local out = {}
  for a = 2, #ARGV do out[#out + 1] = cjson.decode(ARGV[a]) end
  return out
end
