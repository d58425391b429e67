-- Clear a profile's whole history: one profile-level watermark instead of a tombstone
-- per asset. Updates at or before the watermark are ignored (as for a removal).
--
-- ARGV: none. Returns the number of items that were there.

local watermark, _, front = read_head()
local get1, array_len = rare().get1, rare().array_len
local now = now_ms()
local n_items = array_len('$.h')
local mark = math.max(watermark, now)
if front ~= nil then
  local newest = front[F_LAST] -- the array is sorted: the first is the newest
  if newest > mark then mark = newest end
end
redis.call('JSON.SET', K, '$.h', '[]')
redis.call('JSON.SET', K, '$.ids', '[]')
redis.call('JSON.SET', K, '$.wm', mark)
-- For the changes feed: a token older than this clear gets "reset" (drop everything);
-- the removal and eviction records before it say nothing more than that.
redis.call('JSON.SET', K, '$.wcs', change_stamp())
redis.call('JSON.SET', K, '$.eid', '[]')
redis.call('JSON.SET', K, '$.ecs', '[]')
-- Tombstones at or before the watermark say nothing more than it does.
local times = get1('$.tts')
for j = #times, 1, -1 do
  if times[j] <= mark then
    redis.call('JSON.ARRPOP', K, '$.tid', j - 1)
    redis.call('JSON.ARRPOP', K, '$.tts', j - 1)
    redis.call('JSON.ARRPOP', K, '$.tcs', j - 1)
  end
end
commit_stamp() -- the history is empty: "cs" holds the clear's stamp
return n_items
