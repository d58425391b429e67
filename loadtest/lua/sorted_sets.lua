-- Models 2 and 3 of the load test (the design record's option 1, both variants): the
-- items kept apart, plus one sorted set per lookup dimension per profile, all kept in
-- step by this script (item.lua, update_rules.lua and rules.lua in front of it, then a
-- line setting ITEMS_IN_HASH: loadtest/models.py).
--
-- Keys of a profile (P = KEYS[1] = "<prefix>{<profileId>}"):
--   P:i:<assetId>                 sorted_sets: the item, a string (its packed text,
--                                 codec.py's encoding, so that the comparison is about
--                                 the model, not the encoding), one key per item; or
--   P:h                           sorted_sets_hash: one hash of every item, field
--                                 assetId, value the packed text (a listpack while the
--                                 server's hash-max-listpack-entries/-value allow)
--   P:r                           recency: every item
--   P:ip                          in progress (continue watching)
--   P:sp:<sport>                  by sport
--   P:se:<sport>:<series>         by sport + series
--   P:tm:<sport>:<series>:<team>  by sport + series + team (one set per team of the item)
--   P:sh:<show>                   by show
--   P:ss:<show>:<season>          by show + season
--   P:m                           hash: watermark and tombstones (rules.lua)
--
-- Every set scores a member (the assetId) by -lastWatchedAt, so ZRANGE 0 n gives the
-- history order: newest first, and among equal times assetId ascending (the engine
-- orders equal scores by member). A write that changes lastWatchedAt re-scores the item
-- in every set it is in: that is the price of this model on the hot path. A heartbeat
-- leaves what the item is (sport, series, teams, show, season) as it was, so it only
-- re-scores; an update that changes those moves the item between sets (rare path).
--
-- Replies: record: one status letter per update (record_progress.lua's); remove,
-- clear: the number of items that were there; read: packed items.

local R, IP = P .. ':r', P .. ':ip'
local ITEMS = P .. ':h'

-- An item by its asset id: ``op`` GET or DEL (``text`` nil), or SET ``text``; on its own
-- key, or as HGET, HDEL, HSET in the profile's hash of items.
local function items(op, asset_id, text)
  if ITEMS_IN_HASH then
    if text then return redis.call('HSET', ITEMS, asset_id, text) end
    return redis.call('H' .. op, ITEMS, asset_id)
  end
  if text then return redis.call('SET', P .. ':i:' .. asset_id, text) end
  return redis.call(op, P .. ':i:' .. asset_id)
end

-- ``command`` (ZADD or ZREM) with ``...`` (score and member, or member) on every set of
-- an item's description but the in-progress one.
local function touch_sets(item, command, ...)
  redis.call(command, R, ...)
  local sport, show = item[F_SPORT], item[F_SHOW]
  if not is_null(sport) then
    local key = P .. ':sp:' .. sport
    redis.call(command, key, ...)
    local series = item[F_SERIES]
    if not is_null(series) then
      redis.call(command, P .. ':se:' .. sport .. ':' .. series, ...)
      local teams = item[F_TEAMS]
      if not is_null(teams) then
        for t = 1, #teams do
          redis.call(command, P .. ':tm:' .. sport .. ':' .. series .. ':' .. teams[t], ...)
        end
      end
    end
  end
  if not is_null(show) then
    redis.call(command, P .. ':sh:' .. show, ...)
    local season = item[F_SEASON]
    if not is_null(season) then
      redis.call(command, P .. ':ss:' .. show .. ':' .. string.format('%d', season), ...)
    end
  end
end

if OP == 'record' then
  local batch, cutoff, replies = updates()
  for i = 1, #batch do
    if not replies[i] then
      local u = batch[i]
      local asset_id = u[U_ID]
      local raw = items('GET', asset_id)
      local item = raw and cjson.decode(raw) or nil
      local last, was_in_progress
      -- what the item is, to tell whether its sets change (a missing trailing field
      -- is nil, a hole is NULL: both read as NULL here)
      local sport, series, teams, show, season
      if item ~= nil then
        last, was_in_progress = item[F_LAST], in_progress(item)
        sport, series, teams = item[F_SPORT] or NULL, item[F_SERIES] or NULL, item[F_TEAMS] or NULL
        show, season = item[F_SHOW] or NULL, item[F_SEASON] or NULL
      end
      replies[i], item = apply(u, item, cutoff[i])
      local text = pack(item)
      if text ~= raw then
        items('SET', asset_id, text)
        local score = -item[F_LAST]
        local now_in_progress = in_progress(item)
        local new = item[F_TEAMS] or NULL
        local same = raw and sport == (item[F_SPORT] or NULL) and series == (item[F_SERIES] or NULL)
          and show == (item[F_SHOW] or NULL) and season == (item[F_SEASON] or NULL)
        if same and teams ~= new then
          same = teams ~= NULL and new ~= NULL and #teams == #new
          for t = 1, same and #new or 0 do
            if teams[t] ~= new[t] then same = false end
          end
        end
        if same then
          -- the common case: the same sets, re-scored when lastWatchedAt moved
          if last ~= item[F_LAST] then touch_sets(item, 'ZADD', score, asset_id) end
          if now_in_progress and (last ~= item[F_LAST] or not was_in_progress) then
            redis.call('ZADD', IP, score, asset_id)
          elseif was_in_progress and not now_in_progress then
            redis.call('ZREM', IP, asset_id)
          end
        else
          -- a new item, or one whose description changed: out of its old sets, into
          -- its new ones
          if raw then touch_sets(cjson.decode(raw), 'ZREM', asset_id) end
          touch_sets(item, 'ZADD', score, asset_id)
          if now_in_progress then
            redis.call('ZADD', IP, score, asset_id)
          elseif was_in_progress then
            redis.call('ZREM', IP, asset_id)
          end
        end
        -- Past MAX_ITEMS the oldest lastWatchedAt goes, ties: the lowest assetId (the
        -- first member of the lowest score's run, read BYSCORE).
        if not raw and redis.call('ZCARD', R) > MAX_ITEMS then
          local oldest = redis.call('ZRANGE', R, -1, -1, 'WITHSCORES')[2]
          local victim = redis.call('ZRANGE', R, oldest, oldest, 'BYSCORE', 'LIMIT', 0, 1)[1]
          touch_sets(cjson.decode(items('GET', victim)), 'ZREM', victim)
          items('DEL', victim)
          redis.call('ZREM', IP, victim)
        end
      end
    end
  end
  return table.concat(replies)
end

if OP == 'remove' or OP == 'clear' then
  local r = rare()
  local now, ids, mark = r.start()
  if OP == 'clear' then
    local newest = redis.call('ZRANGE', R, 0, 0, 'WITHSCORES')[2]
    if newest and -tonumber(newest) > mark then mark = -tonumber(newest) end
    ids = redis.call('ZRANGE', R, 0, -1)
  end
  local removed = 0
  for _, asset_id in ipairs(ids) do
    local packed = items('GET', asset_id)
    local at = now
    if packed then
      local item = cjson.decode(packed)
      if item[F_LAST] > at then at = item[F_LAST] end
      touch_sets(item, 'ZREM', asset_id)
      redis.call('ZREM', IP, asset_id)
      items('DEL', asset_id)
      removed = removed + 1
    end
    if OP == 'remove' then r.tombstone(asset_id, at) end
  end
  if OP == 'remove' then
    r.prune_tombstones(now - TOMBSTONE_TTL_MS, false)
  else
    redis.call('HSET', META, 'wm', string.format('%d', mark))
    r.prune_tombstones(mark, true)
  end
  return removed
end

-- read: ARGV[2] how many, ARGV[3..] the set suffixes to read (several: their union,
-- for "any of these teams"); the packed items, as stored, in history order.
if OP == 'read' then
  local count = tonumber(ARGV[2])
  local members
  if #ARGV == 3 then
    members = redis.call('ZRANGE', P .. ARGV[3], 0, count - 1)
  else
    local keys = {}
    for a = 3, #ARGV do keys[#keys + 1] = P .. ARGV[a] end
    keys[#keys + 1] = 'AGGREGATE'
    keys[#keys + 1] = 'MIN' -- an item in two of the sets has the same score in both
    members = redis.call('ZUNION', #keys - 2, unpack(keys))
    for i = count + 1, #members do members[i] = nil end
  end
  if #members == 0 then return {} end
  if ITEMS_IN_HASH then return redis.call('HMGET', ITEMS, unpack(members)) end
  for i = 1, #members do members[i] = P .. ':i:' .. members[i] end
  return redis.call('MGET', unpack(members))
end

return redis.error_reply('unknown operation ' .. tostring(OP))
