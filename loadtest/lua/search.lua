-- Model 4 of the load test: one JSON document per item, indexed by search (FT.CREATE
-- ... ON JSON, loadtest/models.py creates the index on every primary); item.lua,
-- update_rules.lua and rules.lua in front of this script (loadtest/models.py). It needs
-- RediSearch on RedisJSON: valkey-json (MemoryDB's engine) gives the search module no
-- JSON, and MemoryDB's own search must be enabled when a cluster is created and is
-- single-shard, so this model cannot run on MemoryDB.
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
-- A write sends only the fields that changed (one JSON.MSET: a heartbeat's t, p, o and
-- those of ip, dv, da, ca that moved), never the whole document, so the index is told
-- of one changed document per heartbeat. Search indexes by document: it indexes that
-- document's fields again, not only the ones that moved (that is the module's
-- granularity; nothing finer is offered to a script).
-- In cluster mode each shard indexes its own keys; a profile's keys share a slot, so
-- the shard that owns the profile answers its searches alone. There the search module
-- finds documents but does not load them (its index name is routed as a key, in another
-- slot than the documents): searches ask for keys only (NOCONTENT) and this script reads
-- the documents, on both topologies, so that both run the same code.
--
-- Replies as sorted_sets.lua's; read: ARGV[2] the query (without the profile: this
-- script adds it), ARGV[3] how many; the documents ('[{...}]', as JSON.MGET $ gives
-- them) in history order.

local PROFILE = P:match('{(.*)}$')
-- codec.ITEM_FIELDS by their short names (loadtest/models.py SHORT_KEYS)
-- then item.lua's positions after them (18 unused: the store's change stamp)
local NAMES = {'id', 't', 'p', 'd', 'f', 'c', 'ca', 'dv', 'ty', 'ti', 'sp', 'se', 'tm', 'sh',
  'sn', 'ep', 'da', 'cs', 'pa', 'pk'}
local POSITION = {}
for i = 1, N_FIELDS do POSITION[NAMES[i]] = i end

-- The item of a document as JSON.RESP gives it ({'{', name, value, ...}; an array
-- {'[', ...}; a double as text; null as false), with its ip flag.
local function item_of(resp)
  local item = {}
  local ip = 0
  for k = 2, #resp, 2 do
    local name, v = resp[k], resp[k + 1]
    local i = POSITION[name]
    if i ~= nil then
      if v == false then
        v = NULL
      elseif type(v) == 'table' then
        table.remove(v, 1)
      elseif i ~= F_ID and type(v) == 'string' and i ~= F_DEVICE and (i < F_TYPE or i > F_SHOW) then
        v = tonumber(v)
      end
      item[i] = v
    elseif name == 'ip' then
      ip = v
    end
  end
  return item, ip
end

local function order(item)
  return string.format('"%013d:%s"', 9999999999999 - item[F_LAST], item[F_ID])
end

-- Keys of the profile's items matching a query, in the search reply's order.
local function search(query, ...)
  local reply = redis.call('FT.SEARCH', INDEX, '@pr:{' .. PROFILE:gsub('([^%w])', '\\%1') .. '}'
    .. query, 'NOCONTENT', ...)
  table.remove(reply, 1)
  return reply
end

if OP == 'record' then
  local batch, cutoff, replies = updates()
  for i = 1, #batch do
    if not replies[i] then
      local u = batch[i]
      local asset_id = u[U_ID]
      local key = P .. ':i:' .. asset_id
      local resp = redis.call('JSON.RESP', key, '$')
      local item, old = nil, nil
      local ip = 0
      if resp then
        item, ip = item_of(resp[1])
        old = {unpack(item, 1, N_FIELDS)} -- its values, to send only what changes
      end
      replies[i], item = apply(u, item, cutoff[i])
      local now_ip = in_progress(item) and 1 or 0
      if old == nil then
        local doc = {pr = PROFILE, ip = now_ip}
        for f = 1, N_FIELDS do
          if not is_null(item[f]) then doc[NAMES[f]] = item[f] end
        end
        doc.o = string.format('%013d:%s', 9999999999999 - item[F_LAST], asset_id)
        redis.call('JSON.SET', key, '$', cjson.encode(doc))
        local count = redis.call('HINCRBY', META, 'n', 1)
        -- Past MAX_ITEMS the oldest lastWatchedAt goes, ties: the lowest assetId.
        if count > MAX_ITEMS then
          local oldest = search('', 'SORTBY', 't', 'ASC', 'LIMIT', 0, 1)[1]
          local t = string.format('%d', redis.call('JSON.RESP', oldest, '$.t')[1])
          local victim = search(' @t:[' .. t .. ' ' .. t .. ']', 'SORTBY', 'o', 'ASC',
            'LIMIT', 0, 1)[1]
          redis.call('DEL', victim)
          redis.call('HSET', META, 'n', count - 1)
        end
      else
        local args = {}
        for f = 2, N_FIELDS do
          local v = item[f]
          if v == nil then v = NULL end
          local was = old[f]
          if was == nil then was = NULL end
          local changed = v ~= was
          if changed and type(v) == 'table' and type(was) == 'table' and #v == #was then
            changed = false
            for t = 1, #v do
              if v[t] ~= was[t] then changed = true end
            end
          end
          if changed then
            args[#args + 1] = key
            args[#args + 1] = '$.' .. NAMES[f]
            args[#args + 1] = cjson.encode(v)
          end
        end
        if item[F_LAST] ~= old[F_LAST] then
          args[#args + 1] = key
          args[#args + 1] = '$.o'
          args[#args + 1] = order(item)
        end
        if now_ip ~= ip then
          args[#args + 1] = key
          args[#args + 1] = '$.ip'
          args[#args + 1] = tostring(now_ip)
        end
        if #args > 0 then redis.call('JSON.MSET', unpack(args)) end
      end
    end
  end
  return table.concat(replies)
end

if OP == 'remove' or OP == 'clear' then
  local r = rare()
  local now, keys, mark = r.start()
  if OP == 'remove' then
    for k, asset_id in ipairs(keys) do keys[k] = P .. ':i:' .. asset_id end
  else
    local count = tonumber(redis.call('HGET', META, 'n')) or 0
    keys = search('', 'LIMIT', 0, count + 1)
  end
  local removed = 0
  for k, key in ipairs(keys) do
    local t = redis.call('JSON.RESP', key, '$.t')
    local at = now
    if t and t[1] then
      if t[1] > at then at = t[1] end
      redis.call('DEL', key)
      removed = removed + 1
    end
    if OP == 'remove' then r.tombstone(ARGV[k + 1], at) elseif at > mark then mark = at end
  end
  if OP == 'remove' then
    redis.call('HINCRBY', META, 'n', -removed)
    r.prune_tombstones(now - TOMBSTONE_TTL_MS, false)
  else
    redis.call('HSET', META, 'wm', string.format('%d', mark), 'n', 0)
    r.prune_tombstones(mark, true)
  end
  return removed
end

if OP == 'read' then
  local keys = search(ARGV[2], 'SORTBY', 'o', 'ASC', 'LIMIT', 0, tonumber(ARGV[3]))
  if #keys == 0 then return {} end
  keys[#keys + 1] = '$'
  return redis.call('JSON.MGET', unpack(keys)) -- as stored: the client decodes
end

return redis.error_reply('unknown operation ' .. tostring(OP))
