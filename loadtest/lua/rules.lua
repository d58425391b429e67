-- What the load test's alternative models do with the update rules (update_rules.lua,
-- before this file): one collapsed update against one stored item, and the watermark and
-- tombstones kept in the profile's meta hash. loadtest/models.py builds each script
-- from item.lua, update_rules.lua, this file and the model's own.

threshold = THRESHOLD -- update_rules.lua's

-- One collapsed update against the stored item (a table, or nil when there is none).
-- Returns the status letter (record_progress.lua's: a, s, i, x) and the item to write
-- (nil when nothing changed). ``cutoff``: max(the asset's tombstone, the watermark).
local function decide(u, stored, cutoff)
  if u[U_TIME] <= cutoff then return 'i', nil end
  if u[U_EARLIEST] <= cutoff then return 'x', nil end
  if stored == nil then
    local item = full({u[U_ID], 0, 0, NULL, u[U_EARLIEST], 0, NULL, NULL})
    apply_newest(item, u, cutoff)
    return 'a', item
  end
  local before = pack(stored)
  local item = cjson.decode(before)
  full(item)
  if u[U_EARLIEST] < item[F_FIRST] then item[F_FIRST] = u[U_EARLIEST] end
  if u[U_TIME] > item[F_LAST] then
    apply_newest(item, u, cutoff)
    return 'a', item
  end
  copy_asset_fields(item, u, true)
  take_device(item, u, item[F_LAST])
  item[F_DONE_AT] = completed_at(item, u, cutoff)
  if pack(item) == before then return 's', nil end
  return 's', item
end

-- The watermark and the tombstones of some assets, in one call.
local function cutoffs(asset_ids)
  local fields = {'wm'}
  for i, id in ipairs(asset_ids) do fields[i + 1] = 't:' .. id end
  local values = redis.call('HMGET', META, unpack(fields))
  local wm = tonumber(values[1]) or 0
  local out = {}
  for i, id in ipairs(asset_ids) do
    out[id] = math.max(tonumber(values[i + 1]) or 0, wm)
  end
  return wm, out
end

-- Leave (or raise) an asset's tombstone at ``at``.
local function tombstone(asset_id, at)
  local old = tonumber(redis.call('HGET', META, 't:' .. asset_id)) or 0
  if at > old then redis.call('HSET', META, 't:' .. asset_id, string.format('%d', at)) end
end

-- Forget tombstones older than ``limit`` (inclusive when ``inclusive``).
local function prune_tombstones(limit, inclusive)
  local all = redis.call('HGETALL', META)
  for i = 1, #all, 2 do
    local name, at = all[i], tonumber(all[i + 1])
    if name:sub(1, 2) == 't:' and (at < limit or (inclusive and at == limit)) then
      redis.call('HDEL', META, name)
    end
  end
end

-- The collapsed updates of ARGV[2..], decoded.
local function updates()
  local out = {}
  for a = 2, #ARGV do out[#out + 1] = cjson.decode(ARGV[a]) end
  return out
end
