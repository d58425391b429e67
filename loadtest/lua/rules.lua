-- What the load test's alternative models do with the update rules (update_rules.lua,
-- before this file): one collapsed update applied to one item in place, and the
-- watermark and tombstones kept in the profile's meta hash. loadtest/models.py builds
-- each script from item.lua, update_rules.lua, this file and the model's own.

threshold = THRESHOLD -- update_rules.lua's

-- One collapsed update against the stored item (a table, changed in place), or nil when
-- there is none, past the cutoff checks (the caller has answered "i" and "x"). Returns
-- the status letter (record_progress.lua's: a, s) and the item (a new table for a new
-- asset). ``cutoff``: max(the asset's tombstone, the watermark). The caller tells
-- whether anything changed by packing the item and comparing with the text it read.
local function apply(u, item, cutoff)
  if item == nil then
    item = {u[U_ID], 0, 0, NULL, u[U_EARLIEST], 0, NULL, NULL}
    apply_newest(item, u, cutoff)
    return 'a', item
  end
  if u[U_EARLIEST] < item[F_FIRST] then item[F_FIRST] = u[U_EARLIEST] end
  if u[U_TIME] > item[F_LAST] then
    apply_newest(item, u, cutoff)
    return 'a', item
  end
  apply_older(item, u, cutoff)
  return 's', item
end

-- The helpers of removals and clears, built on first use (see item.lua).
local helpers = nil
local function rare()
  if helpers ~= nil then return helpers end
  helpers = {}

  function helpers.now_ms()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end

  -- Leave (or raise) an asset's tombstone at ``at``.
  function helpers.tombstone(asset_id, at)
    local old = tonumber(redis.call('HGET', META, 't:' .. asset_id)) or 0
    if at > old then redis.call('HSET', META, 't:' .. asset_id, string.format('%d', at)) end
  end

  -- Forget tombstones older than ``limit`` (inclusive when ``inclusive``).
  function helpers.prune_tombstones(limit, inclusive)
    local all = redis.call('HGETALL', META)
    for i = 1, #all, 2 do
      local name, at = all[i], tonumber(all[i + 1])
      if name:sub(1, 2) == 't:' and (at < limit or (inclusive and at == limit)) then
        redis.call('HDEL', META, name)
      end
    end
  end

  -- What a removal or a clear starts from: the server's clock, and for a removal the
  -- asset ids (ARGV[2..]), for a clear the new watermark so far (max(the old one, now)).
  function helpers.start()
    local now = helpers.now_ms()
    if OP == 'remove' then return now, {unpack(ARGV, 2)}, nil end
    return now, nil, math.max(tonumber(redis.call('HGET', META, 'wm')) or 0, now)
  end

  return helpers
end

-- The collapsed updates of ARGV[2..], decoded, their cutoffs, from the watermark and
-- the tombstones of their assets read in one call (cutoff[i] = max(tombstone of update
-- i's asset, watermark)), and the replies the cutoffs decide alone: "i" for an update at
-- or before its cutoff, "x" for one whose records straddle it, false for the others.
local function updates()
  local batch, fields = {}, {'wm'}
  for a = 2, #ARGV do
    local u = cjson.decode(ARGV[a])
    batch[a - 1] = u
    fields[a] = 't:' .. u[U_ID]
  end
  local values = redis.call('HMGET', META, unpack(fields))
  local wm = tonumber(values[1]) or 0
  local cutoff, replies = {}, {}
  for i = 1, #batch do
    local c = math.max(tonumber(values[i + 1]) or 0, wm)
    cutoff[i] = c
    replies[i] = batch[i][U_TIME] <= c and 'i' or (batch[i][U_EARLIEST] <= c and 'x')
  end
  return batch, cutoff, replies
end
