-- Record progress updates for one profile: the rules of the data model, applied
-- atomically (docs/data-model.md "The rules", and store.HistoryStore.record_progress).
--
-- ARGV[1]: "completionThreshold,maxItems,returnItems (0|1)" (then fast_heartbeat.lua's
--   fields, when the client marked the call for it)
-- ARGV[2..]: one JSON array per asset: a coalesced update (coalesce.py builds them):
--   [assetId, newestTime, position, duration|null, kind (0|1|2), deviceId|null,
--    type, title, sport, series, teams, show, season, episode,   -- asset fields or null
--    earliestTime, lastCompletingTime|null, undecided|null, deviceTime|null,
--    assetRecord|null]
--   kind: the newest record's (update_rules.lua: 1 "complete", 2 a start report below
--   MIN_RESUME_SECONDS, which is never merged with other records; 0 any other).
--   The asset fields are layout 3's texts (codec.py: asset_text) and assetRecord the
--   version of the asset record that holds exactly them (the client wrote it before
--   this call; settle_assets in common.lua decides whether the item names it);
--   earliestTime: the oldest eventTime of the records merged into it (firstWatchedAt);
--   deviceTime: when the record that named deviceId was sent, if not at newestTime;
--   lastCompletingTime: the newest of the OLDER merged records that completed;
--   undecided: [[time, position], ...] older records that carried no duration at all,
--   whose completion depends on the stored duration.
-- Returns, with returnItems = 1: one {status, itemText|false} per update; else ONE
-- string of status letters, one per update (a reply the client parses in one go):
--   "a" applied  newer than what was stored: the item now reflects it
--   "s" stale    not newer (duplicate, replay, late): only firstWatchedAt, completedAt,
--                missing asset fields and a resume point over a start report's may
--                have been filled in
--   "i" ignored  at or before a removal/clear of the asset: nothing changed
--   "x" split    a removal falls between the records merged into this update: nothing
--                changed; the caller sends those records one by one instead.
--
-- Why a script: the rules read the stored item, compare times and write it back. Done
-- from the client, two recorders (or the recorder and a user's "remove") could both
-- read the old item, and the later write would undo the other:
--     recorder A: read item (t=10)           recorder B: read item (t=10)
--     A: write t=20                          B: write t=15   <- A's newer update lost
-- Inside one script nothing interleaves, so each update sees the result of the last.

local cfg_threshold, cfg_max, cfg_return = string.match(ARGV[1], '^([^,]*),([^,]*),([^,]*)')
threshold = tonumber(cfg_threshold) -- update_rules.lua's (store.py puts it before this)
local max_items, return_items = tonumber(cfg_max), cfg_return == '1'

local watermark, tids, front = read_head(FAST_GOT) -- (fast_heartbeat.lua read it)
-- The number of items, read only when an item is added (most updates change one).
local n_items = nil
local function count_items()
  if n_items == nil then n_items = rare().count_items() end
  return n_items
end

-- Index of an asset in the history: the newest item (read with the head) answers
-- without a server call in the common case; else a search of the "ids" string.
local function find(asset_id)
  if front ~= nil and front[F_ID] == asset_id then return 0, front end
  local idx = index_of(asset_id)
  if idx < 0 then return idx, nil end
  return idx, rare().item_at(idx)
end

-- Drop the oldest items while there are more than max_items (ties: lowest assetId,
-- which is the first of the tied run at the end of the sorted array).
local function evict_overflow()
  count_items()
  local r = rare()
  while n_items > max_items do
    local victim = n_items - 1
    local last = r.last_at(victim)
    while victim > 0 and r.last_at(victim - 1) == last do victim = victim - 1 end
    r.note_evicted(victim, max_items) -- the changes feed tells clients to drop it
    r.remove_at(victim)
    n_items = n_items - 1
  end
end

local replies = {}
for a = 2, #ARGV do
  local u = cjson.decode(ARGV[a])
  local asset_id = u[U_ID]
  local tomb = tombstone_of(asset_id, tids)
  -- Updates at or before the latest removal of this asset (or clear-all) never count.
  local cutoff = math.max(tomb, watermark)
  local status, item
  if u[U_TIME] <= cutoff then
    status = 'i'
  elseif u[U_EARLIEST] <= cutoff then
    status = 'x'
  else
    local idx, stored = find(asset_id)
    front = nil -- whatever happens next may change the front item: stop trusting it
    if idx < 0 then
      -- A new item (or the first after a removal).
      item = {asset_id, 0, 0, NULL, u[U_EARLIEST], 0, NULL, NULL}
      for i = #item + 1, N_FIELDS do item[i] = NULL end
      apply_newest(item, u, cutoff)
      settle_assets(item, u)
      stamp_item(item)
      local r = rare()
      r.insert_item(r.insert_position(item[F_LAST], asset_id, count_items()), item)
      n_items = n_items + 1
      evict_overflow()
      status = 'a'
    else
      item = stored
      local first_before = item[F_FIRST]
      if u[U_EARLIEST] < item[F_FIRST] then item[F_FIRST] = u[U_EARLIEST] end
      if u[U_TIME] > item[F_LAST] then
        apply_newest(item, u, cutoff)
        settle_assets(item, u)
        stamp_item(item)
        -- A newer time moves the item towards the front: find its place before idx
        -- (the front item, a heartbeat's, stays where it is).
        local pos = idx
        if idx > 0 then pos = rare().insert_position(item[F_LAST], asset_id, idx) end
        if pos == idx then
          set_item(idx, item)
        else
          rare().remove_at(idx)
          rare().insert_item(pos, item)
        end
        status = 'a'
      else
        -- Stale (update_rules.lua: apply_older).
        local before = item_text(item)
        apply_older(item, u, cutoff)
        settle_assets(item, u)
        if item_text(item) ~= before or item[F_FIRST] ~= first_before then
          stamp_item(item)
          set_item(idx, item)
        end
        status = 's'
      end
    end
  end
  if not return_items then
    replies[#replies + 1] = status
  else
    if item == nil then
      -- Ignored or split: the caller still wants what is stored.
      local idx = index_of(asset_id)
      if idx >= 0 then item = rare().item_at(idx) end
    end
    replies[#replies + 1] = {status, item ~= nil and item_text(item) or false}
  end
end
commit()
if return_items then return replies end
return table.concat(replies)
