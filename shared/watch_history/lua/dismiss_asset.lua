-- Dismiss an asset from continue watching ("remove from row"), keeping its history.
--
-- ARGV[1]: the asset id. Returns 1 when the history has the item (dismissed now, or
-- already), 0 when it has none (nothing is written, not even an empty document).
--
-- The item stays in the history, and every lookup still shows it, with dismissedAt;
-- continue watching (status=in_progress, query.py: is_dismissed) leaves it out while its
-- lastWatchedAt is not after dismissedAt. A newer report (the viewer resumed it) brings
-- it back; an older one arriving late does not, whatever the order they arrive in:
--     user: dismiss (t=100)              recorder: heartbeat of t=95 arrives late
--     -> dismissedAt 100                 -> lastWatchedAt 95 <= 100: still hidden
--     the viewer plays it again (t=130)  -> 130 > 100: back in continue watching
-- The dismissal is max(now, the item's lastWatchedAt), as a removal's tombstone is, so
-- that a player whose clock runs ahead does not undo it with a report it already sent.
-- Idempotent: an item already hidden is left as it is (nothing for the changes feed).

if redis.call('EXISTS', K) == 0 then return 0 end
local asset_id = ARGV[1]
local _, _, front = read_head()
local idx, item = 0, front
if front == nil or front[F_ID] ~= asset_id then
  idx = index_of(asset_id)
  if idx < 0 then return 0 end
  item = rare().item_at(idx)
end
local dismissed = item[F_DISMISSED]
if not is_null(dismissed) and item[F_LAST] <= dismissed then return 1 end
item[F_DISMISSED] = math.max(now_ms(), item[F_LAST])
stamp_item(item) -- the changes feed reports the item, with dismissedAt
set_item(idx, item)
commit()
return 1
