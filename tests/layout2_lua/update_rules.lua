-- The rules that apply one collapsed update to one item (README "Data model and
-- rules", 2-3): the newest record wins, completion and completedAt, asset fields, the
-- device. Pure functions on the item table (positions of codec.ITEM_FIELDS, 1-based)
-- and the collapsed update (coalesce.py builds it; record_progress.lua's ARGV says its
-- layout). One copy for every script that applies updates: record_progress.lua (store.py
-- puts this file between common.lua and it) and the load test's alternative models
-- (loadtest/models.py puts it between loadtest/lua/item.lua and loadtest/lua/rules.lua).
--
-- Needs in scope, from the file before it: NULL, is_null and the F_* positions it uses.
-- The script after it sets ``threshold`` (completionThreshold) before applying any.

local threshold = nil

local U_ID, U_TIME, U_POS, U_DUR, U_COMPLETE, U_DEVICE = 1, 2, 3, 4, 5, 6
local U_META_FIRST, U_META_LAST = 7, 14   -- same order as F_TYPE .. F_EPISODE
local U_EARLIEST, U_LAST_COMPLETING, U_UNDECIDED, U_DEVICE_AT = 15, 16, 17, 18

local function reaches_end(position, duration)
  return not is_null(duration) and duration > 0 and position >= threshold * duration
end

local function completes(u, duration)
  return u[U_COMPLETE] == 1 or reaches_end(u[U_POS], duration)
end

-- completedAt = the newest time at which any applied record completed the asset
-- (stale ones included: a replayed "complete" still says it was completed then).
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

-- deviceId is the device named by the newest update that names one (equal times: the
-- greater id), whatever the order they arrive in: a newer update without a device
-- keeps the stored one, an older one naming a device replaces it only if it is newer
-- than the update that named the stored one. Call before F_LAST changes; new_last is
-- the item's lastWatchedAt after this update.
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

-- Make the newest record of u the item's state (its time is newer than the item's).
local function apply_newest(item, u, cutoff)
  copy_asset_fields(item, u, false)
  take_device(item, u, u[U_TIME])
  item[F_LAST] = u[U_TIME]
  item[F_POS] = u[U_POS]
  item[F_DONE] = completes(u, item[F_DUR]) and 1 or 0
  item[F_DONE_AT] = completed_at(item, u, cutoff)
end
