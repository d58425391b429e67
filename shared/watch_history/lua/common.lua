-- Shared prelude of every watch-history script (store.py prepends it to each).
--
-- KEYS[1] is the profile's document (see codec.py for its layout). Every script
-- touches only that key, so in cluster mode it runs on the one shard that owns the
-- profile's {hash tag}, atomically: no other command on that profile interleaves.
--
-- Only JSON commands and paths that behave the same on Amazon MemoryDB (valkey-json)
-- and on RedisJSON are used (../shared/memorydb-json.md): static $-paths, array
-- indices >= 0, ARRINDEX/ARRINSERT/ARRPOP/ARRAPPEND, never a filter path in a write.
-- Values coming from clients arrive only in ARGV, JSON-encoded by cjson before they
-- reach a JSON command, never spliced into a path.

local K = KEYS[1]
local NULL = cjson.null

-- Positions in an item's array; codec.ITEM_FIELDS has the same order.
local F_ID, F_LAST, F_POS, F_DUR, F_FIRST, F_DONE, F_DONE_AT, F_DEVICE = 1, 2, 3, 4, 5, 6, 7, 8
local F_TYPE, F_SEASON, F_EPISODE = 9, 15, 16
-- When the stored device was named, if not at F_LAST (null in the common case: the
-- newest update named it; pack() then leaves the field out).
local F_DEVICE_AT = 17
local N_FIELDS = 17

local function is_null(v)
  return v == nil or v == NULL
end

-- The server's clock in epoch milliseconds. Scripts are replicated by their effects,
-- so reading the clock here is safe and every replica stores the same value.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The first match of a $-path, decoded; nil when the key or the path is missing.
local function get1(path)
  local raw = redis.call('JSON.GET', K, path)
  if not raw then return nil end
  local found = cjson.decode(raw)
  if found[1] == nil then return nil end
  return found[1]
end

-- Index (0-based) of a string in one of the document's arrays, or -1.
local function index_of(array_path, value)
  return redis.call('JSON.ARRINDEX', K, array_path, cjson.encode(value))[1]
end

local function array_len(array_path)
  return redis.call('JSON.ARRLEN', K, array_path)[1]
end

-- An item of the history, decoded to a table of N_FIELDS entries (holes are NULL so
-- that cjson encodes it back as an array).
local function item_at(idx)
  local packed = get1('$.h[' .. idx .. ']')
  local item = cjson.decode(packed)
  for i = #item + 1, N_FIELDS do item[i] = NULL end
  return item
end

local function pack(item)
  local n = N_FIELDS
  while n > 0 and is_null(item[n]) do
    item[n] = nil
    n = n - 1
  end
  local text = cjson.encode(item)
  for i = n + 1, N_FIELDS do item[i] = NULL end
  return text
end

-- History order: newest lastWatchedAt first, ties by assetId ascending.
local function comes_before(last_a, id_a, last_b, id_b)
  if last_a ~= last_b then return last_a > last_b end
  return id_a < id_b
end

-- Where an item with (last, id) belongs in h[lo, hi): binary search on the sorted
-- array. The common case (the newest item) answers at the first probe.
local function insert_position(last, id, hi)
  local lo = 0
  if hi == 0 then return 0 end
  local first = item_at(0)
  if comes_before(last, id, first[F_LAST], first[F_ID]) then return 0 end
  lo = 1
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local other = item_at(mid)
    if comes_before(last, id, other[F_LAST], other[F_ID]) then hi = mid else lo = mid + 1 end
  end
  return lo
end

local function insert_item(pos, item)
  redis.call('JSON.ARRINSERT', K, '$.h', pos, cjson.encode(pack(item)))
  redis.call('JSON.ARRINSERT', K, '$.ids', pos, cjson.encode(item[F_ID]))
end

local function remove_at(idx)
  redis.call('JSON.ARRPOP', K, '$.h', idx)
  redis.call('JSON.ARRPOP', K, '$.ids', idx)
end

-- The tombstone of an asset (0 when none) and its index in "tid" (-1 when none):
-- updates at or before it are ignored. ``tids`` is the decoded "tid" array (from
-- read_head), usually empty, so no server call is needed to find out.
local function tombstone_of(asset_id, tids)
  for j = 1, #tids do
    if tids[j] == asset_id then return get1('$.tts[' .. (j - 1) .. ']'), j - 1 end
  end
  return 0, -1
end

local EMPTY_DOC = '{"v":1,"h":[],"ids":[],"tid":[],"tts":[],"wm":0}'

-- What every write needs first, in ONE server call: the clear-all watermark, the
-- tombstoned asset ids and the newest item (the one heartbeats usually update).
-- Creates the document when the profile has none. Returns wm, tids, front (packed
-- item text or nil when the history is empty).
local function read_head()
  local raw = redis.call('JSON.GET', K, '$.wm', '$.tid', '$.h[0]')
  if not raw then
    redis.call('JSON.SET', K, '$', EMPTY_DOC)
    return 0, {}, nil
  end
  -- Several paths: an object keyed by path (key order differs between engines).
  local head = cjson.decode(raw)
  return head['$.wm'][1], head['$.tid'][1], head['$.h[0]'][1]
end
