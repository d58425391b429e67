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
-- newest update named it).
local F_DEVICE_AT = 17
local N_FIELDS = 17
-- After the N_FIELDS fields (codec.CHANGED_POSITION): when the item last changed, as
-- its change stamp minus its lastWatchedAt (a few digits for a heartbeat, see
-- change_stamp below). Items written before change stamps existed have none.
local F_CHANGED = N_FIELDS + 1

local function is_null(v)
  return v == nil or v == NULL
end

-- The server's clock in epoch milliseconds. Scripts are replicated by their effects,
-- so reading the clock here is safe and every replica stores the same value.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function pack(item)
  local n = N_FIELDS
  if item[F_CHANGED] == nil then
    while n > 0 and is_null(item[n]) do
      item[n] = nil
      n = n - 1
    end
  end -- else every field is written (null where missing): the stamp comes after them
  local text = cjson.encode(item)
  for i = n + 1, N_FIELDS do item[i] = NULL end
  return text
end

-- The helpers of the rare paths (a new item, a move, an eviction, a removal, an
-- upgrade) are built by rare() on first use, not up front: an EVAL script runs its
-- whole body on every call, so every top-level `local function` costs a closure and its
-- upvalues on every call, used or not. A heartbeat (its newest item updated) never
-- calls rare(): measured with callgrind, that saves it about 20k of the ~300k
-- instructions the engine spends on it (FUNCTION/FCALL would define them all once).
local rare

-- The tombstone of an asset (0 when none) and its index in "tid" (-1 when none):
-- updates at or before it are ignored. ``tids`` is the decoded "tid" array (from
-- read_head), usually empty, so no server call is needed to find out.
local function tombstone_of(asset_id, tids)
  for j = 1, #tids do
    if tids[j] == asset_id then return rare().get1('$.tts[' .. (j - 1) .. ']'), j - 1 end
  end
  return 0, -1
end

-- The layout documents are written in (codec.LAYOUT): a new document has it (EMPTY_DOC's
-- "v"), and upgrade_layout.lua brings older ones to it ("v" says a document's own).
local LAYOUT = 2
local EMPTY_DOC = '{"v":2,"h":[],"ids":[],"tid":[],"tts":[],"tcs":[],"wm":0,'
  .. '"cs":0,"hz":0,"wcs":0,"eid":[],"ecs":[]}'

-- The document's "cs" as read_head found it (nil when the document predates change
-- stamps, see change_stamp), and the change stamp its front item carries (0: none).
local head_cs = nil
local head_front_stamp = 0

-- An item's change stamp (F_CHANGED holds it minus the item's lastWatchedAt); 0 for an
-- item written before change stamps existed.
local function stamp_of(item)
  local changed = item[F_CHANGED]
  if changed == nil or changed == NULL then return 0 end
  return item[F_LAST] + changed
end

-- What every write needs first: the clear-all watermark, the tombstoned asset ids and
-- "cs" in one JSON.GET (one union path: values in the order asked on both engines, a
-- missing member left out, so "cs" goes last: documents older than change stamps have
-- none), then the newest item (the one heartbeats usually update, and the other half
-- of the latest stamp: see change_stamp) by JSON.RESP, which hands the packed text over
-- as it is stored. Measured (instructions, both engines): this costs less than one
-- JSON.GET of four paths, whose reply is an object keyed by path with the item's text
-- escaped inside it (RedisJSON compiles each path per call; cjson un-escapes the text
-- char by char). Creates the document when the profile has none. Returns wm, tids,
-- front (the newest item, decoded; nil when the history is empty).
local function read_head()
  local raw = redis.call('JSON.GET', K, "$['wm','tid','cs']")
  if not raw then
    redis.call('JSON.SET', K, '$', EMPTY_DOC)
    head_cs = 0
    return 0, {}, nil
  end
  local head = cjson.decode(raw)
  head_cs = head[3]
  local packed = redis.call('JSON.RESP', K, '$.h[0]')[1]
  local front = nil
  if packed then
    front = cjson.decode(packed)
    head_front_stamp = stamp_of(front)
  end
  return head[1], head[2], front
end

-- --- change stamps: what the changes feed (read_changes.lua) is built on ------------
--
-- Every script call that changes a profile takes ONE change stamp, and everything it
-- changes carries it: items (F_CHANGED), removals (tombstone "tcs"), evictions
-- ("eid"/"ecs"), a clear ("wcs"). The document's latest stamp becomes the client's
-- token. A stamp is the server's clock in ms, but strictly greater than the previous
-- one of the profile:
--     stamp = max(TIME in ms, latest + 1)
-- Why not the plain clock: two writes in one millisecond, and a sync between them:
--     write A at 1000 ms -> latest 1000    (plain clock: A stamped 1000)
--     client syncs      -> token 1000      (it has A)
--     write B at 1000 ms -> latest 1001    (plain clock: B stamped 1000, and the next
--     client syncs since 1000 -> gets B     sync "since 1000" would never return B)
-- A script runs alone on its shard, so the read of the latest stamp, the write and the
-- new latest stamp are one step; a clock that goes back (failover to a node whose clock
-- is behind) cannot reuse a stamp either. Scripts replicate their effects, so TIME is
-- allowed here and replicas store the same stamps.
--
-- Where the latest stamp is kept: latest = max("cs", the front item's stamp). A
-- heartbeat updates the front item, which then carries the call's stamp, so "cs" is
-- written only by a call that leaves the front item without it (a removal, a clear, a
-- stale update or a new item further down, an eviction of the front): one JSON.SET
-- less per heartbeat, so one write command, not a MULTI/EXEC of two, goes to the
-- replicas and the log (241 bytes instead of 332; -3 to -4% of its instructions net:
-- docs/speed.md). read_changes.lua reads both. "cs" is written at the end of the call
-- (commit_stamp), once the front item is known; a script that fails half-way (a bug:
-- its writes are not rolled back) could leave an item stamped after the latest stamp,
-- as it could leave any other half-done write.
--
-- "hz" (horizon): no token older than it can be answered, because something changed
-- after it that the document no longer remembers (a tombstone past its TTL, an
-- eviction record dropped past the cap, or the document's first change: nothing
-- before it is known). read_changes answers such tokens "gone": the client re-reads.

local stamp = nil
-- Whether the front item carries this call's stamp (set where items are written).
local front_stamped = false

-- This call's change stamp (taken on first use; read_head has run by then).
local function change_stamp()
  if stamp ~= nil then return stamp end
  stamp = now_ms()
  if head_cs == nil then
    rare().add_change_fields() -- a document written before change stamps ("v":1)
  end
  local last = math.max(head_cs or 0, head_front_stamp)
  if last > 0 then
    if last + 1 > stamp then stamp = last + 1 end
  else
    redis.call('JSON.SET', K, '$.hz', stamp) -- the first change: nothing before is known
  end
  return stamp
end

-- Every writing script ends with this: "cs" is written unless the front item carries
-- the stamp (see above).
local function commit_stamp()
  if stamp ~= nil and not front_stamped then redis.call('JSON.SET', K, '$.cs', stamp) end
end

-- Write an item back in place (it carries this call's stamp when the call took one).
local function set_item(idx, item)
  redis.call('JSON.SET', K, '$.h[' .. idx .. ']', cjson.encode(pack(item)))
  if idx == 0 then front_stamped = true end
end

local function stamp_item(item)
  item[F_CHANGED] = change_stamp() - item[F_LAST]
end

-- --- the rare paths' helpers (see rare above) ---------------------------------------

local helpers = nil
function rare()
  if helpers ~= nil then return helpers end

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

  -- (items written carry this call's stamp: see front_stamped)
  local function insert_item(pos, item)
    redis.call('JSON.ARRINSERT', K, '$.h', pos, cjson.encode(pack(item)))
    redis.call('JSON.ARRINSERT', K, '$.ids', pos, cjson.encode(item[F_ID]))
    if pos == 0 then front_stamped = true end
  end

  local function remove_at(idx)
    redis.call('JSON.ARRPOP', K, '$.h', idx)
    redis.call('JSON.ARRPOP', K, '$.ids', idx)
    if idx == 0 then front_stamped = false end
  end

  -- A document written before change stamps ("v":1) gets their fields.
  local function add_change_fields()
    local n = array_len('$.tid') or 0
    local zeros = {}
    for j = 1, n do zeros[j] = 0 end
    redis.call('JSON.SET', K, '$.tcs', n > 0 and cjson.encode(zeros) or '[]')
    redis.call('JSON.SET', K, '$.eid', '[]')
    redis.call('JSON.SET', K, '$.ecs', '[]')
    redis.call('JSON.SET', K, '$.wcs', 0)
    redis.call('JSON.SET', K, '$.cs', 0) -- it has stamps from now on (see read_head)
    redis.call('JSON.SET', K, '$.v', 2)
  end

  -- Tokens older than ``at`` can no longer be answered (something after them is forgotten).
  local function forget_until(at)
    local horizon = get1('$.hz') or 0
    if at > horizon then redis.call('JSON.SET', K, '$.hz', at) end
  end

  -- The item at ``idx`` is about to be evicted (rule 5): remember it for the changes
  -- feed, at most ``cap`` records (the oldest forgotten first, moving the horizon).
  local function note_evicted(idx, cap)
    local asset_id = get1('$.ids[' .. idx .. ']')
    local at = change_stamp()
    redis.call('JSON.ARRAPPEND', K, '$.eid', cjson.encode(asset_id))
    local n = redis.call('JSON.ARRAPPEND', K, '$.ecs', at)[1]
    if n > cap then
      local oldest = cjson.decode(redis.call('JSON.ARRPOP', K, '$.ecs', 0)[1])
      redis.call('JSON.ARRPOP', K, '$.eid', 0)
      forget_until(oldest)
    end
  end

  helpers = {
    get1 = get1,
    index_of = index_of,
    array_len = array_len,
    item_at = item_at,
    insert_position = insert_position,
    insert_item = insert_item,
    remove_at = remove_at,
    add_change_fields = add_change_fields,
    forget_until = forget_until,
    note_evicted = note_evicted,
  }
  return helpers
end
