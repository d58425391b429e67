-- Clear a profile's whole history: one profile-level watermark instead of a tombstone
-- per asset. Updates at or before the watermark are ignored (as for a removal).
--
-- ARGV: none. Returns the number of items that were there.

local watermark, tids, front = read_head()
local r = rare()
local now = now_ms()
local n_items = r.count_items()
local mark = math.max(watermark, now)
if front ~= nil then
  local newest = front[F_LAST] -- the array is sorted: the first is the newest
  if newest > mark then mark = newest end
end
redis.call('JSON.SET', K, '$.h', '[' .. quoted(EMPTY_HEAD) .. ']') -- the head: below
set_ids('')
head.front = ''
head.n = 0
head.wm = mark
-- For the changes feed: a token older than this clear gets "reset" (drop everything);
-- the removal and eviction records before it say nothing more than that.
head.wcs = change_stamp()
head_dirty = true
redis.call('JSON.SET', K, '$.eid', '[]')
redis.call('JSON.SET', K, '$.ecs', '[]')
-- Tombstones at or before the watermark say nothing more than it does.
local times = r.get1('$.tts')
for j = #times, 1, -1 do
  if times[j] <= mark then
    redis.call('JSON.ARRPOP', K, '$.tid', j - 1)
    redis.call('JSON.ARRPOP', K, '$.tts', j - 1)
    redis.call('JSON.ARRPOP', K, '$.tcs', j - 1)
    table.remove(tids, j)
  end
end
head.nt = #tids
commit() -- the history is empty: the head's cs holds the clear's stamp
return n_items
