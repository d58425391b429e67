-- Model 3 of the load test: one JSON document per item, indexed by search (FT.CREATE
-- ... ON JSON, loadtest/models.py creates the index on every primary); item.lua,
-- update_rules.lua and rules.lua in front of this script (loadtest/models.py).
--
-- Keys of a profile (P = KEYS[1] = "<prefix>{<profileId>}"):
--   P:i:<assetId>  the item as a JSON object (search indexes named fields only):
--                  pr profile, id, t lastWatchedAt, p position, d duration, f first,
--                  c completed, ca completedAt, dv device, ty type, ti title, sp sport,
--                  se series, tm teams, sh show, sn season, ep episode, da deviceAt; and two fields
--                  for the index: ip (1 when in progress) and o, the history order as one
--                  sortable text ((9999999999999 - t) in 13 digits, ":", assetId), since
--                  SORTBY takes one field and ties go by assetId.
--   P:m            hash: watermark and tombstones (rules.lua), and "n" the item count
--                  (so that only a write past MAX_ITEMS has to search)
-- In cluster mode each shard indexes its own keys; a profile's keys share a slot, so
-- the shard that owns the profile answers its searches alone. There the search module
-- finds documents but does not load them (its index name is routed as a key, in another
-- slot than the documents): searches ask for keys only (NOCONTENT) and this script reads
-- the documents, on both topologies, so that both run the same code.
--
-- ARGV[1]: rules.lua's config with the index name (5th) and the operation (6th):
-- "record" | "remove" | "clear" | "read". Replies as sorted_sets.lua's; read: ARGV[2] the
-- query (without the profile: this script adds it), ARGV[3] how many, and the documents
-- ('[{...}]', as JSON.GET $ gives them) in history order.

local INDEX, OP = CFG[5], CFG[6]
local PROFILE = P:match('{(.*)}$')

-- Tag values in a query need every punctuation character escaped.
local function tag(value)
  return (tostring(value):gsub('([^%w])', '\\%1'))
end
local MINE = '@pr:{' .. tag(PROFILE) .. '}'

local FIELDS = {'id', 't', 'p', 'd', 'f', 'c', 'ca', 'dv', 'ty', 'ti', 'sp', 'se', 'tm', 'sh',
  'sn', 'ep', 'da'} -- codec.ITEM_FIELDS, by their short names (loadtest/models.py SHORT_KEYS)

local function doc_key(asset_id)
  return P .. ':i:' .. asset_id
end

local function load(asset_id)
  local raw = redis.call('JSON.GET', doc_key(asset_id), '$')
  if not raw then return nil end
  local doc = cjson.decode(raw)[1]
  local item = {}
  for i, name in ipairs(FIELDS) do
    local v = doc[name]
    if v == nil then v = NULL end
    item[i] = v
  end
  return item
end

local function save(item)
  local doc = {pr = PROFILE}
  for i, name in ipairs(FIELDS) do
    if not is_null(item[i]) then doc[name] = item[i] end
  end
  doc.ip = in_progress(item) and 1 or 0
  doc.o = string.format('%013d', 9999999999999 - item[F_LAST]) .. ':' .. item[F_ID]
  redis.call('JSON.SET', doc_key(item[F_ID]), '$', cjson.encode(doc))
end

-- Keys of the profile's items matching a query, in the search reply's order.
local function search(query, ...)
  local reply = redis.call('FT.SEARCH', INDEX, MINE .. query, 'NOCONTENT', ...)
  local keys = {}
  for i = 2, #reply do keys[#keys + 1] = reply[i] end
  return keys
end

local function time_of(key)
  return cjson.decode(redis.call('JSON.GET', key, '$.t'))[1]
end

-- Past MAX_ITEMS the oldest lastWatchedAt goes, ties: the lowest assetId.
local function evict_overflow(count)
  while count > MAX_ITEMS do
    local oldest = string.format('%d', time_of(search('', 'SORTBY', 't', 'ASC', 'LIMIT', 0, 1)[1]))
    local victims = search(' @t:[' .. oldest .. ' ' .. oldest .. ']', 'SORTBY', 'o', 'ASC',
      'LIMIT', 0, 1)
    redis.call('DEL', victims[1])
    count = count - 1
  end
  return count
end

local function record()
  local batch = updates()
  local ids = {}
  for i, u in ipairs(batch) do ids[i] = u[U_ID] end
  local _, cutoff = cutoffs(ids)
  local replies = {}
  local added = 0
  for i, u in ipairs(batch) do
    local asset_id = u[U_ID]
    local stored = nil
    if u[U_TIME] > cutoff[asset_id] and u[U_EARLIEST] > cutoff[asset_id] then
      stored = load(asset_id)
    end
    local status, item = decide(u, stored, cutoff[asset_id])
    if item ~= nil then
      save(item)
      if stored == nil then
        local count = redis.call('HINCRBY', META, 'n', 1)
        if count > MAX_ITEMS then
          redis.call('HSET', META, 'n', evict_overflow(count))
        end
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
      redis.call('DEL', doc_key(asset_id))
      redis.call('HINCRBY', META, 'n', -1)
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
  local count = tonumber(redis.call('HGET', META, 'n')) or 0
  local keys = search('', 'LIMIT', 0, count + 1)
  for _, key in ipairs(keys) do
    local t = time_of(key)
    if t > mark then mark = t end
    redis.call('DEL', key)
  end
  redis.call('HSET', META, 'wm', string.format('%d', mark), 'n', 0)
  prune_tombstones(mark, true)
  return #keys
end

local function read()
  local out = {}
  for i, key in ipairs(search(ARGV[2], 'SORTBY', 'o', 'ASC', 'LIMIT', 0, tonumber(ARGV[3]))) do
    out[i] = redis.call('JSON.GET', key, '$') -- as stored: the client decodes
  end
  return out
end

if OP == 'record' then return record() end
if OP == 'remove' then return remove() end
if OP == 'clear' then return clear() end
if OP == 'read' then return read() end
return redis.error_reply('unknown operation ' .. tostring(OP))
