-- What the changes feed needs of one profile, read atomically (store.HistoryStore.changes,
-- changes.py builds the delta): nothing can change between reading the items and the
-- token, so a write is either in this answer or after its token.
--
-- ARGV[1]: the stamp of the client's token (0: no token). Returns false when the profile
-- has no document, else the JSON texts of [latest, hz, wcs, h, tid, tcs, eid, ecs] (each
-- "[]" when the document predates it; latest: the document's latest stamp, "cs" or the
-- front item's).
--
-- When the token is the document's latest stamp, nothing changed since it: every
-- stamp in the document is at or before it, so the delta is empty whatever the items
-- and change records hold, and they are not read ("[]" for each). That is the usual
-- sync (an app coming back to a history that did not change), and it spares the server
-- and the client the whole array.

if redis.call('EXISTS', K) == 0 then return false end
local out = {}
for i, path in ipairs({'$.cs', '$.hz', '$.wcs'}) do
  out[i] = redis.call('JSON.GET', K, path) or '[]'
end
-- The latest stamp is max("cs", the front item's stamp) (common.lua, "change stamps"):
-- it goes back in place of "cs".
local latest = cjson.decode(out[1])[1]
local front = redis.call('JSON.RESP', K, '$.h[0]')[1]
if latest ~= nil and front then
  local front_stamp = stamp_of(cjson.decode(front))
  if front_stamp > latest then
    latest = front_stamp
    out[1] = '[' .. string.format('%d', latest) .. ']'
  end
end
local since = tonumber(ARGV[1]) or 0
local unchanged = since > 0 and latest ~= nil and latest == since
for i, path in ipairs({'$.h', '$.tid', '$.tcs', '$.eid', '$.ecs'}) do
  out[i + 3] = (not unchanged and redis.call('JSON.GET', K, path)) or '[]'
end
return out
