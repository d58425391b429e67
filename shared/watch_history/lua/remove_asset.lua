-- Remove assets from a profile's history and leave tombstones, atomically.
--
-- ARGV[1]: JSON [tombstoneTtlMs]; ARGV[2..]: asset ids.
-- Returns the number of items that were there.
--
-- The tombstone is max(now, the item's lastWatchedAt): heartbeats still in flight in
-- the stream (or replayed later) at or before it are ignored by record_progress, so a
-- removed title does not come back:
--     user: DELETE asset (t=100)        recorder: heartbeat of t=95 arrives late
--     -> tombstone 100                  -> 95 <= 100: ignored, the title stays gone
-- A newer heartbeat (t=101: the user plays it again) starts a new item.

local ttl_ms = cjson.decode(ARGV[1])[1]
local _, tids = read_head()
local r = rare()
local now = now_ms()
local removed = 0
local stamp_now = change_stamp()

for a = 2, #ARGV do
  local asset_id = ARGV[a]
  local at = now
  local idx = index_of(asset_id)
  if idx >= 0 then
    local last = r.last_at(idx)
    if last > at then at = last end
    r.remove_at(idx)
    removed = removed + 1
  end
  local old, j = tombstone_of(asset_id, tids)
  if j >= 0 then
    if at > old then redis.call('JSON.SET', K, '$.tts[' .. j .. ']', at) end
    -- "tcs": when the client should drop it (the changes feed), only if it was there.
    if idx >= 0 then redis.call('JSON.SET', K, '$.tcs[' .. j .. ']', stamp_now) end
  else
    redis.call('JSON.ARRAPPEND', K, '$.tid', quoted(asset_id))
    redis.call('JSON.ARRAPPEND', K, '$.tts', at)
    redis.call('JSON.ARRAPPEND', K, '$.tcs', stamp_now)
    tids[#tids + 1] = asset_id
  end
end

-- Forget tombstones past their time to live (from the end, so indices stay valid).
-- A change-feed token older than a forgotten removal can no longer be answered.
local times = r.get1('$.tts')
local cutoff = now - ttl_ms
for j = #times, 1, -1 do
  if times[j] < cutoff then
    redis.call('JSON.ARRPOP', K, '$.tid', j - 1)
    redis.call('JSON.ARRPOP', K, '$.tts', j - 1)
    r.forget_until(cjson.decode(redis.call('JSON.ARRPOP', K, '$.tcs', j - 1)[1]))
    table.remove(tids, j)
  end
end
if head.nt ~= #tids then
  head.nt = #tids
  head_dirty = true
end
commit()
return removed
