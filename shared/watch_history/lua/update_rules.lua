-- The rules that apply one collapsed update to one item (docs/data-model.md, rules
-- 2-3): the newest record wins, completion and completedAt, asset fields, the
-- device. Pure functions on the item table (positions of codec.ITEM_FIELDS, 1-based)
-- and the collapsed update (coalesce.py builds it; record_progress.lua's ARGV says its
-- layout). One copy for every script that applies updates: record_progress.lua (store.py
-- puts this file between common.lua and it) and the load test's alternative models
-- (loadtest/models.py puts it between loadtest/lua/item.lua and loadtest/lua/rules.lua).
--
-- Needs in scope, from the file before it: NULL, is_null and the F_* positions it uses
-- (F_POS_AT and F_POS_KIND too: item tables keep them after the change stamp).
-- The script after it sets ``threshold`` (completionThreshold) before applying any.

local threshold = nil

local U_ID, U_TIME, U_POS, U_DUR, U_KIND, U_DEVICE = 1, 2, 3, 4, 5, 6
-- u[U_KIND], the kind of the update's newest report (coalesce.py: UpdateKind), and an
-- item's F_POS_KIND, the kind of the report that set its position (nil: an ordinary one)
local KIND_COMPLETE = 1 -- eventType "complete": "mark as watched"
local KIND_START = 2 -- eventType "start" below MIN_RESUME_SECONDS: a player's start report
local U_META_FIRST, U_META_LAST = 7, 14   -- same order as F_TYPE .. F_EPISODE
local U_EARLIEST, U_LAST_COMPLETING, U_UNDECIDED, U_DEVICE_AT = 15, 16, 17, 18

local function reaches_end(position, duration)
  return not is_null(duration) and duration > 0 and position >= threshold * duration
end

local function completes(u, duration)
  return u[U_KIND] == KIND_COMPLETE or reaches_end(u[U_POS], duration)
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

-- The resume point (docs/data-model.md, rule 3): the position, and the completion, of the report
-- that counts most. A start report below MIN_RESUME_SECONDS counts least: players send
-- position 0 before they seek to the resume point, so it never replaces the position of
-- any other report, whatever their order; among reports of one strength the newest
-- wins. The item keeps when its position was set (F_POS_AT, when not at lastWatchedAt)
-- and by what (F_POS_KIND), so that a report arriving late is weighed against it.
local function strength(kind)
  return kind == KIND_START and 0 or 1
end

-- Whether u's position beats the item's (a new item, at lastWatchedAt 0: any does).
local function sets_position(item, u)
  if item[F_LAST] == 0 then return true end
  local mine, theirs = strength(item[F_POS_KIND]), strength(u[U_KIND])
  if mine ~= theirs then return theirs > mine end
  local at = item[F_POS_AT]
  if is_null(at) then at = item[F_LAST] end
  return u[U_TIME] > at
end

local function take_position(item, u)
  item[F_POS] = u[U_POS]
  item[F_POS_AT] = u[U_TIME]
  item[F_POS_KIND] = u[U_KIND] ~= 0 and u[U_KIND] or NULL
  item[F_DONE] = completes(u, item[F_DUR]) and 1 or 0
end

-- After any update: "mark as watched" stands at the duration once one is known (given,
-- stored, or brought later by an older report); then its kind says nothing more (the
-- reports of one asset agree on its duration: rule 6's precondition) and is not kept,
-- nor is the time of a position set at lastWatchedAt.
local function settle_position(item)
  if item[F_POS_KIND] == KIND_COMPLETE and not is_null(item[F_DUR]) then
    item[F_POS] = item[F_DUR]
    item[F_POS_KIND] = NULL
  end
  if item[F_POS_AT] == item[F_LAST] then item[F_POS_AT] = NULL end
end

-- Make the newest report of u the item's state (its time is newer than the item's).
local function apply_newest(item, u, cutoff)
  copy_asset_fields(item, u, false)
  take_device(item, u, u[U_TIME])
  if sets_position(item, u) then
    take_position(item, u)
  elseif is_null(item[F_POS_AT]) then
    item[F_POS_AT] = item[F_LAST] -- the position stays, set when the item was last watched
  end
  item[F_LAST] = u[U_TIME]
  item[F_DONE_AT] = completed_at(item, u, cutoff)
  settle_position(item)
end

-- An update not newer than the item (stale): the stored state stays; older reports may
-- still tell when it was first watched, that it was completed back then, fill missing
-- fields, and give the resume point when the stored one is a start report's.
local function apply_older(item, u, cutoff)
  copy_asset_fields(item, u, true)
  take_device(item, u, item[F_LAST])
  if sets_position(item, u) then take_position(item, u) end
  item[F_DONE_AT] = completed_at(item, u, cutoff)
  settle_position(item)
end
