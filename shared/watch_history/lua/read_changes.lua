-- What the changes feed needs of one profile, read atomically (store.HistoryStore.changes,
-- changes.py builds the delta): nothing can change between reading the items and the
-- token, so a write is either in this answer or after its token.
--
-- ARGV: none. Returns false when the profile has no document, else the JSON texts of
-- [cs, hz, wcs, h, tid, tcs, eid, ecs] (each "[]" when the document predates it).

if redis.call('EXISTS', K) == 0 then return false end
local out = {}
for i, path in ipairs({'$.cs', '$.hz', '$.wcs', '$.h', '$.tid', '$.tcs', '$.eid', '$.ecs'}) do
  out[i] = redis.call('JSON.GET', K, path) or '[]'
end
return out
