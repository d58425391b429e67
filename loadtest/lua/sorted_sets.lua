-- Model 2 of the load test: one JSON document per item, plus one sorted set per lookup
-- dimension per profile, all kept in step by this script (item.lua, update_rules.lua
-- and rules.lua in front of it: loadtest/models.py).
--
-- Keys of a profile (P = KEYS[1] = "<prefix>{<profileId>}"):
--   P:i:<assetId>                 the item: a JSON document whose root is the packed item
--                                 string (the store's encoding, codec.py, so that the
--                                 comparison is about the model, not the encoding)
--   P:r                           recency: every item
--   P:ip                          in progress (continue watching)
--   P:sp:<sport>                  by sport
--   P:se:<sport>:<series>         by sport + series
--   P:tm:<sport>:<series>:<team>  by sport + series + team (one set per team of the item)
--   P:sh:<show>                   by show
--   P:ss:<show>:<season>          by show + season
--   P:m                           hash: watermark and tombstones (rules.lua)
-- By asset there is no set: the item's key is its index.
--
-- Every set scores a member (the assetId) by -lastWatchedAt, so ZRANGE 0 n gives the
-- history order: newest first, and among equal times assetId ascending (the engine
-- orders equal scores by member). A write that changes lastWatchedAt re-scores the item
-- in every set it is in: that is the price of this model on the hot path.
--
-- ARGV[1]: rules.lua's config, then the operation: JSON [..., "record"|"remove"|"clear"|
-- "read"]. Replies: record: one status letter per update (record_progress.lua's);
-- remove, clear: the number of items that were there; read: packed items.

local OP = CFG[6]
local R, IP = P .. ':r', P .. ':ip'

local function doc_key(asset_id)
  return P .. ':i:' .. asset_id
end

local function load(asset_id)
  local raw = redis.call('JSON.GET', doc_key(asset_id), '$')
  if not raw then return nil end
  return full(cjson.decode(cjson.decode(raw)[1]))
end

local function save(item)
  redis.call('JSON.SET', doc_key(item[F_ID]), '$', cjson.encode(pack(item)))
end

-- The sets an item belongs in, as a set of key names.
local function sets_of(item)
  local keys = {[R] = true}
  if in_progress(item) then keys[IP] = true end
  local sport, series = item[F_SPORT], item[F_SERIES]
  if not is_null(sport) then
    keys[P .. ':sp:' .. sport] = true
    if not is_null(series) then
      keys[P .. ':se:' .. sport .. ':' .. series] = true
      if not is_null(item[F_TEAMS]) then
        for _, team in ipairs(item[F_TEAMS]) do
          keys[P .. ':tm:' .. sport .. ':' .. series .. ':' .. team] = true
        end
      end
    end
  end
  local show = item[F_SHOW]
  if not is_null(show) then
    keys[P .. ':sh:' .. show] = true
    if not is_null(item[F_SEASON]) then
      keys[P .. ':ss:' .. show .. ':' .. string.format('%d', item[F_SEASON])] = true
    end
  end
  return keys
end

-- Move an item's memberships from ``old`` to ``new`` (either may be nil: insert, delete).
local function reindex(asset_id, old, new)
  local before = old and sets_of(old) or {}
  local after = new and sets_of(new) or {}
  for key in pairs(before) do
    if not after[key] then redis.call('ZREM', key, asset_id) end
  end
  if new then
    local moved = old == nil or old[F_LAST] ~= new[F_LAST]
    local score = -new[F_LAST]
    for key in pairs(after) do
      if moved or not before[key] then redis.call('ZADD', key, score, asset_id) end
    end
  end
end

local function delete(asset_id, item)
  reindex(asset_id, item, nil)
  redis.call('DEL', doc_key(asset_id))
end

-- Past MAX_ITEMS the oldest lastWatchedAt goes, ties: the lowest assetId (the first
-- member of the lowest score's run, read BYSCORE).
local function evict_overflow(count)
  while count > MAX_ITEMS do
    local last = redis.call('ZRANGE', R, -1, -1, 'WITHSCORES')
    local victim = redis.call('ZRANGE', R, last[2], last[2], 'BYSCORE', 'LIMIT', 0, 1)[1]
    delete(victim, load(victim))
    count = count - 1
  end
end

local function record()
  local batch = updates()
  local ids = {}
  for i, u in ipairs(batch) do ids[i] = u[U_ID] end
  local _, cutoff = cutoffs(ids)
  local count = nil
  local replies = {}
  for i, u in ipairs(batch) do
    local asset_id = u[U_ID]
    local stored = nil
    if u[U_TIME] > cutoff[asset_id] and u[U_EARLIEST] > cutoff[asset_id] then
      stored = load(asset_id)
    end
    local status, item = decide(u, stored, cutoff[asset_id])
    if item ~= nil then
      save(item)
      reindex(asset_id, stored, item)
      if stored == nil then
        count = (count or redis.call('ZCARD', R) - 1) + 1
        evict_overflow(count)
        if count > MAX_ITEMS then count = MAX_ITEMS end
      end
    end
    replies[i] = status
  end
  return table.concat(replies)
end

local function remove()
  local now = now_ms()
  local removed = 0
  for a = 2, #ARGV do
    local asset_id = ARGV[a]
    local at = now
    local item = load(asset_id)
    if item ~= nil then
      if item[F_LAST] > at then at = item[F_LAST] end
      delete(asset_id, item)
      removed = removed + 1
    end
    tombstone(asset_id, at)
  end
  prune_tombstones(now - TOMBSTONE_TTL_MS, false)
  return removed
end

local function clear()
  local wm = cutoffs({})
  local mark = math.max(wm, now_ms())
  local newest = redis.call('ZRANGE', R, 0, 0, 'WITHSCORES')[2]
  if newest and -tonumber(newest) > mark then mark = -tonumber(newest) end
  local ids = redis.call('ZRANGE', R, 0, -1)
  for _, asset_id in ipairs(ids) do delete(asset_id, load(asset_id)) end
  redis.call('HSET', META, 'wm', string.format('%d', mark))
  prune_tombstones(mark, true)
  return #ids
end

-- ARGV[2]: "ids" then asset ids (their items, in that order, false when missing), or
-- "sets" then the count and the set suffixes to read (several: their union, for
-- "any of these teams").
local function read()
  local out = {}
  if ARGV[2] == 'ids' then
    for a = 3, #ARGV do
      local raw = redis.call('JSON.GET', doc_key(ARGV[a]), '$')
      out[#out + 1] = raw and cjson.decode(raw)[1] or false
    end
    return out
  end
  local count = tonumber(ARGV[3])
  local members
  if #ARGV == 4 then
    members = redis.call('ZRANGE', P .. ARGV[4], 0, count - 1)
  else
    local keys = {}
    for a = 4, #ARGV do keys[#keys + 1] = P .. ARGV[a] end
    keys[#keys + 1] = 'AGGREGATE'
    keys[#keys + 1] = 'MIN' -- an item in two of the sets has the same score in both
    members = redis.call('ZUNION', #keys - 2, unpack(keys))
  end
  for i = 1, math.min(count, #members) do
    local raw = redis.call('JSON.GET', doc_key(members[i]), '$')
    out[i] = cjson.decode(raw)[1]
  end
  return out
end

if OP == 'record' then return record() end
if OP == 'remove' then return remove() end
if OP == 'clear' then return clear() end
if OP == 'read' then return read() end
return redis.error_reply('unknown operation ' .. tostring(OP))
