-- The stored items of some assets of one profile, in one round trip.
--
-- ARGV: asset ids. Returns the document's layout (3, or 2 for layouts 1 and 2, read as
-- they are), then one stored item (or false) per id, in the same order: layout 3's item
-- text (codec.py), or layout 2's packed JSON array. The "ids" string (layout 3) or
-- ARRINDEX on the "ids" array (layouts 1 and 2) finds each without decoding any item.

local out = {}
local h0 = redis.call('JSON.RESP', K, '$.h[0]')
if not h0 then -- no document
  out[1] = 3
  for a = 1, #ARGV do out[a + 1] = false end
  return out
end
if h0[1] ~= nil and string.sub(h0[1], 1, 3) == 'L3,' then
  out[1] = 3
  parse_head(h0[1])
  for a = 1, #ARGV do -- layout 3 keeps its head at h[0]: item i is at h[i + 1]
    local idx = index_of(ARGV[a])
    out[a + 1] = idx >= 0 and redis.call('JSON.RESP', K, '$.h[' .. (idx + 1) .. ']')[1]
  end
  return out
end
out[1] = 2
for a = 1, #ARGV do
  local idx = redis.call('JSON.ARRINDEX', K, '$.ids', quoted(ARGV[a]))
  if idx and idx[1] and idx[1] >= 0 then
    out[a + 1] = redis.call('JSON.RESP', K, '$.h[' .. idx[1] .. ']')[1]
  else
    out[a + 1] = false
  end
end
return out
