-- What the changes feed needs of one profile, read atomically (store.HistoryStore.changes,
-- changes.py builds the delta): nothing can change between reading the items and the
-- token, so a write is either in this answer or after its token.
--
-- ARGV[1]: the stamp of the client's token (0: no token). Returns false when the profile
-- has no document, else the JSON texts of [latest, hz, wcs, h, tid, tcs, eid, ecs, ids]
-- ($-path results: each "[value]", "[]" when the document predates it; latest: the
-- latest stamp, the head's cs or the front item's). ``h`` holds layout 3's head and item
-- texts, or layout 1/2's packed items (read as they are: a read does not upgrade).
--
-- When the token is the document's latest stamp, nothing changed since it: every
-- stamp in the document is at or before it, so the delta is empty whatever the items
-- and change records hold, and they are not read ("[]" for each). That is the usual
-- sync (an app coming back to a history that did not change), and it spares the server
-- and the client the whole array.

if redis.call('EXISTS', K) == 0 then return false end
local out = {}
local got = redis.call('JSON.RESP', K, '$.h[0:2]') or {}
local latest = nil
if got[1] ~= nil and string.sub(got[1], 1, 3) == 'L3,' then
  parse_head(got[1])
  latest = head.cs
  if got[2] then
    local front_stamp = stamp_of(item_of(head.front, got[2]))
    if front_stamp > latest then latest = front_stamp end
  end
  out[1] = '[' .. fmt(latest) .. ']'
  out[2] = '[' .. fmt(head.hz) .. ']'
  out[3] = '[' .. fmt(head.wcs) .. ']'
else
  -- Layouts 1 and 2: the stamps are members ("[]" in layout 1, which has none).
  for i, path in ipairs({'$.cs', '$.hz', '$.wcs'}) do
    out[i] = redis.call('JSON.GET', K, path) or '[]'
  end
  latest = cjson.decode(out[1])[1]
  local front = redis.call('JSON.RESP', K, '$.h[0]')[1]
  if latest ~= nil and front then
    local front_stamp = rare().v2_stamp(front)
    if front_stamp > latest then
      latest = front_stamp
      out[1] = '[' .. fmt(latest) .. ']'
    end
  end
end
local since = tonumber(ARGV[1]) or 0
local unchanged = since > 0 and latest ~= nil and latest == since
for i, path in ipairs({'$.h', '$.tid', '$.tcs', '$.eid', '$.ecs', '$.ids'}) do
  out[i + 3] = (not unchanged and redis.call('JSON.GET', K, path)) or '[]'
end
return out
