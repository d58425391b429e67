-- Shared prelude of every watch-history script (store.py prepends it to each).
--
-- KEYS[1] is the profile's document (codec.py documents layout 3, and layouts 1 and 2
-- that it still reads). Every script touches only that key, so in cluster mode it runs
-- on the one shard that owns the profile's {hash tag}, atomically: no other command on
-- that profile interleaves. The shared asset records (codec.py) live on other slots:
-- the scripts never touch them; the client writes them before an item names them.
--
-- Only JSON commands and paths that behave the same on Amazon MemoryDB (valkey-json)
-- and on RedisJSON are used (../shared/memorydb-json.md): static $-paths, array
-- indices >= 0, slices, ARRINDEX/ARRINSERT/ARRPOP/ARRAPPEND, never a filter path in a
-- write. Values coming from clients arrive only in ARGV and are never spliced into a
-- path. Item and head texts hold no character that JSON escapes (codec.py: the
-- client percent-escapes titles), so '"' .. text .. '"' is their JSON string.

local K = KEYS[1]
local NULL = cjson.null

-- An item decoded (item_of) is a table with the positions of codec.ITEM_FIELDS, which
-- update_rules.lua works on; layout 3's text is only how it is stored.
local F_ID, F_LAST, F_POS, F_DUR, F_FIRST, F_DONE, F_DONE_AT, F_DEVICE = 1, 2, 3, 4, 5, 6, 7, 8
local F_TYPE, F_SEASON, F_EPISODE = 9, 15, 16
-- When the stored device was named, if not at F_LAST (null in the common case).
local F_DEVICE_AT = 17
local N_FIELDS = 17
-- After the N_FIELDS fields: the change stamp minus lastWatchedAt (nil: none, an item
-- written before change stamps existed).
local F_CHANGED = N_FIELDS + 1
-- Then what only layout 3 stores, times absolute here (codec.py: fields 11-13):
-- when the resume position was set (nil: at lastWatchedAt) and by what kind of report
-- (update_rules.lua's KIND_*; nil: an ordinary one); when it was dismissed from continue
-- watching (nil: never).
local F_POS_AT, F_POS_KIND, F_DISMISSED = 19, 20, 21
local N_ASSET = 8 -- F_TYPE .. F_EPISODE (codec.ASSET_FIELDS)

-- An asset field whose value is the item's asset record's (item.ref): the script does
-- not know the value, only that it is set (the record's mask says which are).
local FROM_REF = {}

local function is_null(v)
  return v == nil or v == NULL
end

-- The server's clock in epoch milliseconds. Scripts are replicated by their effects,
-- so reading the clock here is safe and every replica stores the same value.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Numbers are written as cjson wrote them in layout 2 (14 significant digits: every
-- epoch ms exactly, positions as the client sent them up to that precision).
local function fmt(x)
  return string.format('%.14g', x)
end

-- The first ``n`` comma-separated fields of ``text`` (missing ones ''), and the text
-- after the n-th comma (nil when there is none): fields a script does not know, kept
-- as they are.
local function fields_of(text, n)
  local out, from = {}, 1
  for i = 1, n do
    local at = string.find(text, ',', from, true)
    if not at then
      out[i] = string.sub(text, from)
      for j = i + 1, n do out[j] = '' end
      return out, nil
    end
    out[i] = string.sub(text, from, at - 1)
    from = at + 1
  end
  return out, string.sub(text, from)
end

-- --- layout 3's item text (codec.py, "The item") -------------------------------------
local I_KNOWN = 14 -- fields this code knows; later ones are carried through as they are

-- The asset fields an item keeps itself (not its record's): 8 ';'-separated texts,
-- '' where the record's value (or none) stands.
local function inline_of(text, item)
  local from = 1
  for k = 0, N_ASSET - 1 do
    local at = string.find(text, ';', from, true)
    local v = at and string.sub(text, from, at - 1) or string.sub(text, from)
    if v ~= '' then item[F_TYPE + k] = v end
    if not at then break end
    from = at + 1
  end
end

-- An item (the table update_rules.lua edits) from its stored text and asset id.
local function item_of(asset_id, text)
  local f, rest = fields_of(text, I_KNOWN)
  local last = tonumber(f[1])
  local item = {asset_id, last, tonumber(f[2]), NULL, last, 0, NULL, NULL}
  for i = 9, N_FIELDS do item[i] = NULL end
  if f[3] ~= '' then item[F_DUR] = tonumber(f[3]) end
  if f[4] ~= '' then item[F_FIRST] = last - tonumber(f[4]) end
  if f[5] == '1' then item[F_DONE] = 1 end
  if f[6] ~= '' then item[F_DONE_AT] = last - tonumber(f[6]) end
  if f[7] ~= '' then item[F_DEVICE] = f[7] end
  if f[8] ~= '' then item[F_DEVICE_AT] = last - tonumber(f[8]) end
  if f[9] ~= '' then item[F_CHANGED] = tonumber(f[9]) end
  if f[10] ~= '' then
    item.ref = f[10]
    local mask = tonumber(string.sub(f[10], 1, 2), 16)
    for k = 0, N_ASSET - 1 do
      if bit.band(mask, bit.lshift(1, k)) ~= 0 then item[F_TYPE + k] = FROM_REF end
    end
  end
  if f[11] ~= '' then inline_of(f[11], item) end
  if f[12] ~= '' then item[F_DISMISSED] = last - tonumber(f[12]) end
  if f[13] ~= '' then item[F_POS_AT] = last - tonumber(f[13]) end
  if f[14] ~= '' then item[F_POS_KIND] = tonumber(f[14]) end
  item.rest = rest
  return item
end

local function opt_delta(last, t)
  if is_null(t) then return '' end
  return fmt(last - t)
end

-- The stored text of an item (trailing empty fields left out: absent means unset).
local function item_text(item)
  local last = item[F_LAST]
  local inline = ''
  local parts, any = {}, false
  for k = 1, N_ASSET do
    local v = item[F_TYPE + k - 1]
    if type(v) == 'string' then
      parts[k] = v
      any = true
    else
      parts[k] = ''
    end
  end
  if any then inline = table.concat(parts, ';') end
  local first = last - item[F_FIRST]
  local changed = item[F_CHANGED]
  local text = table.concat({
    fmt(last),
    fmt(item[F_POS]),
    is_null(item[F_DUR]) and '' or fmt(item[F_DUR]),
    first ~= 0 and fmt(first) or '',
    item[F_DONE] == 1 and '1' or '',
    opt_delta(last, item[F_DONE_AT]),
    is_null(item[F_DEVICE]) and '' or item[F_DEVICE],
    opt_delta(last, item[F_DEVICE_AT]),
    (changed == nil or changed == NULL) and '' or fmt(changed),
    item.ref or '',
    inline,
    opt_delta(last, item[F_DISMISSED]),
    opt_delta(last, item[F_POS_AT]),
    is_null(item[F_POS_KIND]) and '' or fmt(item[F_POS_KIND]),
  }, ',')
  if item.rest ~= nil then return text .. ',' .. item.rest end
  return (string.gsub(text, ',+$', ''))
end

-- After the rules applied update ``u`` (nil: none) to ``item``: which asset record it
-- names (item.ref) and which fields it keeps itself. It names u's record (U_REF) when
-- its asset fields are exactly u's; it keeps its own record while some field is still
-- that record's; every other set field is kept in the item (codec.py: "Asset records").
local U_REF = 19 -- after update_rules.lua's U_* positions
local U_ASSET = 7 -- update_rules.lua's U_META_FIRST
local function settle_assets(item, u)
  local ref = u and u[U_REF]
  if not is_null(ref) then
    local same = true
    for k = 0, N_ASSET - 1 do
      local mine, theirs = item[F_TYPE + k], u[U_ASSET + k]
      if mine == FROM_REF then
        if item.ref ~= ref then same = false; break end
      elseif is_null(mine) ~= is_null(theirs) or (not is_null(mine) and mine ~= theirs) then
        same = false
        break
      end
    end
    if same then
      item.ref = ref
      for k = 0, N_ASSET - 1 do
        if not is_null(item[F_TYPE + k]) then item[F_TYPE + k] = FROM_REF end
      end
      return
    end
  end
  for k = 0, N_ASSET - 1 do
    if item[F_TYPE + k] == FROM_REF then return end -- the record still says something
  end
  item.ref = nil
end

local function quoted(text)
  return '"' .. text .. '"'
end

-- --- the head: h[0] ------------------------------------------------------------------
-- "L3,<wm>,<cs>,<hz>,<wcs>,<tombstones>,<items>,<front assetId>": what every write
-- checks, read with the front item in ONE call (JSON.RESP of the slice h[0:2]). See
-- codec.py.
local head = nil -- {wm, cs, hz, wcs, nt, n, front}
local head_dirty = false
local front_stamped = false
local head_front_stamp = 0

local function head_text()
  return 'L3,' .. fmt(head.wm) .. ',' .. fmt(head.cs) .. ',' .. fmt(head.hz) .. ','
    .. fmt(head.wcs) .. ',' .. head.nt .. ',' .. head.n .. ',' .. head.front
end

-- The layout documents are written in (codec.LAYOUT): a new document has it (EMPTY_DOC's
-- "v"), and rare().upgrade (on a profile's next write, or upgrade_layout.lua) brings
-- older ones to it ("v" says a document's own).
local LAYOUT = 3
local EMPTY_HEAD = 'L3,0,0,0,0,0,0,'
local EMPTY_DOC = '{"v":3,"h":["' .. EMPTY_HEAD .. '"],"ids":"","tid":[],"tts":[],"tcs":[],'
  .. '"eid":[],"ecs":[]}'

local function parse_head(text)
  local f = fields_of(text, 8)
  head = {
    wm = tonumber(f[2]), cs = tonumber(f[3]), hz = tonumber(f[4]), wcs = tonumber(f[5]),
    nt = tonumber(f[6]), n = tonumber(f[7]), front = f[8],
  }
end

-- --- "ids": the items' asset ids, one space-separated string ------------------------
-- One string, not an array of strings: every array element costs the engine an
-- allocation rounded up to a size class and a 16-byte slot (codec.py). Read on first
-- use, edited here and written back once, by commit(). Positions are found with plain
-- string.find only: Lua's pattern functions and gsub cost 270-460k instructions on a
-- 200-id string, a plain find ~1k.
local ids_text = nil
local ids_dirty = false
local found_idx, found_at = nil, nil -- index_of's last answer: entry and its first byte

local function ids()
  if ids_text == nil then ids_text = redis.call('JSON.RESP', K, '$.ids')[1] or '' end
  return ids_text
end

local function set_ids(text)
  ids_text = text
  ids_dirty = true
  found_idx = nil
end

-- Index (0-based) of an asset in "ids" (and so in history order), or -1. The index is
-- the number of separators before it: cheap for the recent items that move most.
local function index_of(asset_id)
  local s = ids()
  local from, len = 1, #asset_id
  while true do
    local at = string.find(s, asset_id, from, true)
    if not at then return -1 end
    local after = string.byte(s, at + len)
    if (at == 1 or string.byte(s, at - 1) == 32) and (after == nil or after == 32) then
      local idx, f = 0, 1
      while true do
        local sep = string.find(s, ' ', f, true)
        if not sep or sep > at then break end
        idx = idx + 1
        f = sep + 1
      end
      found_idx, found_at = idx, at
      return idx
    end
    from = at + 1 -- inside a longer id
  end
end

local rare

-- An item's change stamp; 0 for an item written before change stamps existed.
local function stamp_of(item)
  local changed = item[F_CHANGED]
  if changed == nil or changed == NULL then return 0 end
  return item[F_LAST] + changed
end

-- What every write needs first, in one call: the head and the front item. A profile
-- without a document gets an empty one; a document in layout 1 or 2 is rewritten in
-- layout 3 first (rare().upgrade). Returns wm, tids (the tombstoned asset ids, read
-- only when the head counts some), front (the newest item, decoded; nil when none).
-- ``got``: that call's reply when the script made it already (fast_heartbeat.lua).
local function read_head(got)
  got = got or redis.call('JSON.RESP', K, '$.h[0:2]') or {}
  local h0 = got[1]
  if h0 == nil or string.sub(h0, 1, 3) ~= 'L3,' then
    if redis.call('EXISTS', K) == 0 then
      redis.call('JSON.SET', K, '$', EMPTY_DOC)
      parse_head(EMPTY_HEAD)
      return 0, {}, nil
    end
    rare().upgrade()
    got = redis.call('JSON.RESP', K, '$.h[0:2]')
  end
  parse_head(got[1])
  local tids = {}
  if head.nt > 0 then tids = rare().get1('$.tid') end
  local front = nil
  if got[2] then
    front = item_of(head.front, got[2])
    head_front_stamp = stamp_of(front)
  end
  return head.wm, tids, front
end

-- The tombstone of an asset (0 when none) and its index in "tid" (-1 when none).
local function tombstone_of(asset_id, tids)
  for j = 1, #tids do
    if tids[j] == asset_id then return rare().get1('$.tts[' .. (j - 1) .. ']'), j - 1 end
  end
  return 0, -1
end

-- --- change stamps: what the changes feed (read_changes.lua) is built on ------------
--
-- Every script call that changes a profile takes ONE change stamp, and everything it
-- changes carries it: items (F_CHANGED), removals (tombstone "tcs"), evictions
-- ("eid"/"ecs"), a clear (the head's wcs). The document's latest stamp becomes the
-- client's token. A stamp is the server's clock in ms, but strictly greater than the
-- previous one of the profile:
--     stamp = max(TIME in ms, latest + 1)
-- Why not the plain clock: two writes in one millisecond, and a sync between them:
--     write A at 1000 ms -> latest 1000    (plain clock: A stamped 1000)
--     client syncs      -> token 1000      (it has A)
--     write B at 1000 ms -> latest 1001    (plain clock: B stamped 1000, and the next
--     client syncs since 1000 -> gets B     sync "since 1000" would never return B)
-- A script runs alone on its shard, so the read of the latest stamp, the write and the
-- new latest stamp are one step; a clock that goes back (failover to a node whose clock
-- is behind) cannot make a stamp repeat either.
--
-- The latest stamp is max(head's cs, the front item's stamp): a heartbeat on the front
-- item stamps only that item and leaves the head alone (one JSON.SET). A call that
-- leaves the front item without its stamp writes cs into the head (commit).
local stamp = nil

local function change_stamp()
  if stamp ~= nil then return stamp end
  stamp = now_ms()
  local last = math.max(head.cs, head_front_stamp)
  if last > 0 then
    if last + 1 > stamp then stamp = last + 1 end
  else
    head.hz = stamp -- the first change: nothing before is known
    head_dirty = true
  end
  return stamp
end

-- Every writing script ends with this: the head is written when it changed (its cs
-- unless the front item carries the stamp).
local function commit()
  if stamp ~= nil and not front_stamped and head.cs ~= stamp then
    head.cs = stamp
    head_dirty = true
  end
  if head_dirty then redis.call('JSON.SET', K, '$.h[0]', quoted(head_text())) end
  if ids_dirty then redis.call('JSON.SET', K, '$.ids', quoted(ids_text)) end
end

-- Write an item back in place (idx: 0-based in history order; h[idx + 1]).
local function set_item(idx, item)
  redis.call('JSON.SET', K, '$.h[' .. (idx + 1) .. ']', quoted(item_text(item)))
  if idx == 0 then front_stamped = stamp ~= nil and stamp_of(item) == stamp end
end

local function stamp_item(item)
  item[F_CHANGED] = change_stamp() - item[F_LAST]
end

-- --- the rare paths' helpers ---------------------------------------------------------
-- Built by rare() on first use, not up front: an EVAL script runs its whole body on
-- every call, so every top-level `local function` costs a closure on every call, used
-- or not. A heartbeat on the front item never calls rare().

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

  local function count_items()
    return head.n
  end

  -- Where entry idx of "ids" starts (its first byte).
  local function entry_start(idx)
    if idx == found_idx then return found_at end
    if idx == 0 then return 1 end
    local s = ids()
    local from = 1
    if idx == head.n - 1 then -- the last (evictions): its separator is in the last 129 bytes
      from = math.max(1, #s - 129)
      local last = nil
      while true do
        local sep = string.find(s, ' ', from, true)
        if not sep then return last + 1 end
        last, from = sep, sep + 1
      end
    end
    for _ = 1, idx do from = string.find(s, ' ', from, true) + 1 end
    return from
  end

  local function id_at(idx)
    if idx >= head.n then return nil end
    local s = ids()
    local from = entry_start(idx)
    local sep = string.find(s, ' ', from, true)
    return string.sub(s, from, sep and sep - 1 or #s)
  end

  local function text_at(idx)
    return redis.call('JSON.RESP', K, '$.h[' .. (idx + 1) .. ']')[1]
  end

  local function item_at(idx)
    return item_of(id_at(idx), text_at(idx))
  end

  -- lastWatchedAt of the item at idx, without decoding the rest.
  local function last_at(idx)
    local text = text_at(idx)
    return tonumber(string.sub(text, 1, string.find(text, ',', 1, true) - 1))
  end

  -- History order: newest lastWatchedAt first, ties by assetId ascending.
  local function comes_before(last, id, idx)
    local other = last_at(idx)
    if last ~= other then return last > other end
    return id < id_at(idx)
  end

  -- Where an item with (last, id) belongs in h[lo, hi): binary search on the sorted
  -- array. The common case (the newest item) answers at the first probe.
  local function insert_position(last, id, hi)
    if hi == 0 or comes_before(last, id, 0) then return 0 end
    local lo = 1
    while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      if comes_before(last, id, mid) then hi = mid else lo = mid + 1 end
    end
    return lo
  end

  local function insert_item(pos, item)
    redis.call('JSON.ARRINSERT', K, '$.h', pos + 1, quoted(item_text(item)))
    local s, id = ids(), item[F_ID]
    if head.n == 0 then
      set_ids(id)
    elseif pos == 0 then
      set_ids(id .. ' ' .. s)
    elseif pos == head.n then
      set_ids(s .. ' ' .. id)
    else
      local from = entry_start(pos)
      set_ids(string.sub(s, 1, from - 1) .. id .. ' ' .. string.sub(s, from))
    end
    head.n = head.n + 1
    head_dirty = true
    if pos == 0 then
      front_stamped = stamp ~= nil and stamp_of(item) == stamp
      head.front = item[F_ID]
      head_dirty = true
    end
  end

  local function remove_at(idx)
    redis.call('JSON.ARRPOP', K, '$.h', idx + 1)
    local s = ids()
    local from = entry_start(idx)
    local sep = string.find(s, ' ', from, true)
    if head.n == 1 then
      set_ids('')
    elseif not sep then -- the last: and the separator before it
      set_ids(string.sub(s, 1, from - 2))
    else
      set_ids(string.sub(s, 1, from - 1) .. string.sub(s, sep + 1))
    end
    head.n = head.n - 1
    head_dirty = true
    if idx == 0 then
      front_stamped = false
      head.front = id_at(0) or ''
      head_dirty = true
    end
  end

  -- Tokens older than ``at`` can no longer be answered (something after them is forgotten).
  local function forget_until(at)
    if at > head.hz then
      head.hz = at
      head_dirty = true
    end
  end

  -- The item at ``idx`` is about to be evicted (rule 5): remember it for the changes
  -- feed, at most ``cap`` records (the oldest forgotten first, moving the horizon).
  local function note_evicted(idx, cap)
    local at = change_stamp()
    redis.call('JSON.ARRAPPEND', K, '$.eid', quoted(id_at(idx)))
    local n = redis.call('JSON.ARRAPPEND', K, '$.ecs', at)[1]
    if n > cap then
      local oldest = cjson.decode(redis.call('JSON.ARRPOP', K, '$.ecs', 0)[1])
      redis.call('JSON.ARRPOP', K, '$.eid', 0)
      forget_until(oldest)
    end
  end

  -- An asset field of layout 1 or 2 (a JSON value) as layout 3's text (codec.py
  -- asset_text: the same text the client sends for the same value).
  local function field_text(v)
    if is_null(v) then return nil end
    if type(v) == 'number' then return fmt(v) end
    if type(v) == 'table' then
      if #v == 0 then return nil end
      return table.concat(v, ' ')
    end
    return (string.gsub(v, '[%%,;"\\%c]', function(c)
      return string.format('%%%02X', string.byte(c))
    end))
  end

  local function json_strings(list)
    local out = {}
    for i = 1, #list do out[i] = quoted(list[i]) end
    return '[' .. table.concat(out, ',') .. ']'
  end

  local function json_numbers(list)
    local out = {}
    for i = 1, #list do out[i] = fmt(list[i]) end
    return '[' .. table.concat(out, ',') .. ']'
  end

  -- Rewrite a document of layout 1 or 2 in layout 3, in one JSON.SET: every item as
  -- text, its asset fields kept in the item (the script cannot write asset records:
  -- their keys are on other slots; the item names a record from its next update on
  -- that carries its whole description). Layout 1 (before the changes feed) gets empty
  -- change records and items without stamps, as layout 2's scripts gave it.
  local function upgrade()
    local doc = cjson.decode(redis.call('JSON.GET', K, '$'))[1]
    local texts = {}
    local h, ids = doc.h or {}, doc.ids or {}
    for i = 1, #h do
      local v = cjson.decode(h[i])
      local item = {ids[i], v[F_LAST], v[F_POS], NULL, v[F_FIRST], 0, NULL, NULL}
      for j = 4, N_FIELDS do
        if not is_null(v[j]) then item[j] = v[j] else item[j] = NULL end
      end
      item[F_ID] = ids[i]
      for k = 0, N_ASSET - 1 do
        local t = field_text(item[F_TYPE + k])
        item[F_TYPE + k] = t == nil and NULL or t
      end
      if v[F_DONE] == 1 or v[F_DONE] == true then item[F_DONE] = 1 else item[F_DONE] = 0 end
      item[F_CHANGED] = v[F_CHANGED]
      texts[i + 1] = quoted(item_text(item))
    end
    local tid, tts = doc.tid or {}, doc.tts or {}
    local tcs = doc.tcs
    if tcs == nil then
      tcs = {}
      for j = 1, #tid do tcs[j] = 0 end
    end
    head = {
      wm = doc.wm or 0, cs = doc.cs or 0, hz = doc.hz or 0, wcs = doc.wcs or 0,
      nt = #tid, n = #h, front = ids[1] or '',
    }
    texts[1] = quoted(head_text())
    redis.call('JSON.SET', K, '$', '{"v":3,"h":[' .. table.concat(texts, ',') .. '],"ids":'
      .. quoted(table.concat(ids, ' ')) .. ',"tid":' .. json_strings(tid) .. ',"tts":' .. json_numbers(tts)
      .. ',"tcs":' .. json_numbers(tcs) .. ',"eid":' .. json_strings(doc.eid or {})
      .. ',"ecs":' .. json_numbers(doc.ecs or {}) .. '}')
  end

  -- The change stamp of a layout 1/2 item (its packed JSON array); 0 when it has none.
  local function v2_stamp(packed)
    local v = cjson.decode(packed)
    if is_null(v[F_CHANGED]) then return 0 end
    return v[F_LAST] + v[F_CHANGED]
  end

  helpers = {
    v2_stamp = v2_stamp,
    get1 = get1,
    count_items = count_items,
    id_at = id_at,
    item_at = item_at,
    last_at = last_at,
    insert_position = insert_position,
    insert_item = insert_item,
    remove_at = remove_at,
    forget_until = forget_until,
    note_evicted = note_evicted,
    upgrade = upgrade,
  }
  return helpers
end
