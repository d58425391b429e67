-- The stored items of some assets of one profile, in one round trip.
--
-- ARGV: asset ids. Returns one packed item (or false) per id, in the same order.
-- ARRINDEX on the "ids" array finds each without decoding the others.

local get1 = rare().get1
local out = {}
if redis.call('EXISTS', K) == 0 then
  for a = 1, #ARGV do out[a] = false end
  return out
end
for a = 1, #ARGV do
  local idx = redis.call('JSON.ARRINDEX', K, '$.ids', cjson.encode(ARGV[a]))
  if idx and idx[1] and idx[1] >= 0 then
    out[a] = get1('$.h[' .. idx[1] .. ']')
  else
    out[a] = false
  end
end
return out
