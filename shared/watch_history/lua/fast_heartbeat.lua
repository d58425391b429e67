-- The common writes in as few instructions as the rules allow: a heartbeat on the front
-- item, a newer update of an older item, which moves it to the front, and the first
-- update of a new asset (at the cap: with the oldest item's eviction). store.py
-- puts this file FIRST in record_progress's script, so that a call it handles returns
-- before the rest of the script defines anything (an EVAL script runs its whole body on
-- every call: each function it defines costs the call a closure).
--
-- It handles a call only when the client marked it (ARGV[1] carries the update's
-- fields after the config: one update, a single record: no older records merged, an
-- ordinary report: not "complete", not a start report below MIN_RESUME_SECONDS), the
-- document has no tombstone, and the item is stored with the same device (named at its
-- lastWatchedAt), the same asset record, no asset field kept in the item itself and no
-- dismissal (its fields 10 and 11 empty: codec.py), and the update is newer than the
-- front item (a moved item goes to the front). For that case the rules of
-- update_rules.lua come down to: the update's state (time, position, duration if it has
-- one), firstWatchedAt kept, completed by the threshold, completedAt the update's time
-- if it completes, else kept; device and asset record unchanged; the resume point the
-- update's (an ordinary report newer than the item beats any stored one), so fields 12
-- and 13 (how a stored point was set) are dropped: the written item has 10 fields. A
-- new asset (the update newer than the front item, the document without tombstones)
-- is the general path's new item: the update's state, firstWatchedAt and the device's
-- time at lastWatchedAt, naming the update's asset record. Anything else falls through
-- to the general path (common.lua, update_rules.lua, record_progress.lua), which starts
-- again from the head read here. The property tests hold both paths to the model (tests/model.py), and
-- tests/test_store_rules.py holds their stored texts equal.
--
-- ARGV[1]: "threshold,maxItems,returnItems" (record_progress.lua), then, when marked,
-- ",assetId,time,position,duration,deviceId,assetRecord" (texts as stored: numbers with
-- 14 significant digits, '' when unset).

local FAST_GOT = redis.call('JSON.RESP', KEYS[1], '$.h[0:2]') or {}
local fast_done = nil
do
  local thr, cap, id, time, pos, dur, device, ref = string.match(ARGV[1],
    '^([^,]*),([^,]*),0,([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*)$')
  local h0, text = FAST_GOT[1], FAST_GOT[2]
  -- fields 0-9, and where the rest starts: nothing, or only fields 12-13 after an
  -- empty 10 and 11 (REST)
  local ITEM = '^([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*)()'
  local REST = '^,,,[^,]*,?[^,]*$'
  if ref ~= nil and ref ~= '' and text ~= nil and #ARGV == 2 then
    local wm, cs, nt, front = string.match(h0, '^L3,([^,]*),([^,]*),[^,]*,[^,]*,([^,]*),[^,]*,(.*)$')
    local flast, fd, sdur, fdone_at, sdev, sdevat, fsd, sref, fend, _
    flast, _, sdur, fd, _, fdone_at, sdev, sdevat, fsd, sref, fend = string.match(text, ITEM)
    local ut = tonumber(time)
    if nt == '0' and fsd ~= nil and fsd ~= '' and ut > tonumber(flast) and ut > tonumber(wm)
      and (fend > #text or string.find(text, REST, fend)) then
      local latest = math.max(tonumber(cs), tonumber(flast) + tonumber(fsd))
      local idx, ids, at, new = 0, nil, nil, false
      local last, done_at = flast, fdone_at
      if front ~= id then -- an older item: found in "ids" (common.lua's index_of)
        ids = redis.call('JSON.RESP', KEYS[1], '$.ids')[1] or ''
        local from, len = 1, #id
        while true do
          at = string.find(ids, id, from, true)
          if not at then break end
          local after = string.byte(ids, at + len)
          if string.byte(ids, at - 1) == 32 and (after == nil or after == 32) then break end
          from = at + 1 -- inside a longer id (or the front's: front ~= id)
        end
        if at then
          local f = 1
          while true do
            local sep = string.find(ids, ' ', f, true)
            if not sep or sep > at then break end
            idx = idx + 1
            f = sep + 1
          end
          text = redis.call('JSON.RESP', KEYS[1], '$.h[' .. (idx + 1) .. ']')[1]
          local mend
          last, _, sdur, fd, _, done_at, sdev, sdevat, _, sref, mend = string.match(text, ITEM)
          if last ~= nil and mend <= #text and not string.find(text, REST, mend) then
            last = nil -- an item the general path must take
          end
        else
          last, new = nil, true
        end
      end
      if last ~= nil and sref == ref and sdevat == '' and sdev == device then
        local lastn = tonumber(last)
        local first = lastn - (fd == '' and 0 or tonumber(fd))
        if dur == '' then dur = sdur end
        local durn = tonumber(dur)
        local completes = durn ~= nil and durn > 0 and tonumber(pos) >= tonumber(thr) * durn
        if completes then
          done_at = '0'
        elseif done_at ~= '' then
          done_at = string.format('%.14g', ut - (lastn - tonumber(done_at)))
        end
        -- the change stamp (common.lua, "change stamps"): after the latest, the head's
        -- cs or the front item's
        local t = redis.call('TIME')
        local stamp = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        if latest + 1 > stamp then stamp = latest + 1 end
        local item = '"' .. time .. ',' .. pos .. ',' .. dur .. ','
          .. string.format('%.14g', ut - first) .. ',' .. (completes and '1' or '') .. ','
          .. done_at .. ',' .. device .. ',,' .. string.format('%.14g', stamp - ut) .. ','
          .. ref .. '"'
        if idx == 0 then
          redis.call('JSON.SET', KEYS[1], '$.h[1]', item)
        else -- to the front, carrying the stamp (the head's cs stays)
          redis.call('JSON.ARRPOP', KEYS[1], '$.h', idx + 1)
          redis.call('JSON.ARRINSERT', KEYS[1], '$.h', 1, item)
          redis.call('JSON.SET', KEYS[1], '$.ids', '"' .. id .. ' '
            .. string.sub(ids, 1, at - 2) .. string.sub(ids, at + #id) .. '"')
          redis.call('JSON.SET', KEYS[1], '$.h[0]', '"' .. string.match(h0, '^(.*,)') .. id .. '"')
        end
        fast_done = 'a'
      end
      -- A new asset (not in "ids"): it goes to the front (it is newer than the front
      -- item); at the cap the oldest item goes (rule 5) and is noted for the changes
      -- feed, as common.lua's note_evicted and remove_at do. A tie at the end (the
      -- victim is then the lowest assetId of the tied run) and a history past the cap
      -- (MAX_ITEMS lowered) are the general path's.
      local hz, wcs, n, tail = nil, nil, nil, nil
      if new then
        hz, wcs, n = string.match(h0, '^L3,[^,]*,[^,]*,([^,]*),([^,]*),[^,]*,([^,]*),')
        n = tonumber(n)
        if n >= tonumber(cap) then
          new = false
          if n == tonumber(cap) and n >= 2 then -- the last two items: h[n - 1], h[n]
            tail = redis.call('JSON.RESP', KEYS[1], '$.h[' .. (n - 1) .. ':' .. (n + 1) .. ']')
            new = string.match(tail[1], '^[^,]*') ~= string.match(tail[2], '^[^,]*')
          end
        end
      end
      if new then
        local t = redis.call('TIME')
        local stamp = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        if latest + 1 > stamp then stamp = latest + 1 end
        local durn = tonumber(dur)
        local completes = durn ~= nil and durn > 0 and tonumber(pos) >= tonumber(thr) * durn
        -- the general path's new item: firstWatchedAt and the device's time at
        -- lastWatchedAt (''), completedAt the update's time ('0') if it completes
        redis.call('JSON.ARRINSERT', KEYS[1], '$.h', 1, '"' .. time .. ',' .. pos .. ','
          .. dur .. ',,' .. (completes and '1,0' or ',') .. ',' .. device .. ',,'
          .. string.format('%.14g', stamp - ut) .. ',' .. ref .. '"')
        local kept = ids
        if tail ~= nil then
          redis.call('JSON.ARRPOP', KEYS[1], '$.h', n + 1)
          local from, sep = math.max(1, #ids - 129), nil -- an id has at most 128 characters
          while true do
            local s = string.find(ids, ' ', from, true)
            if not s then break end
            sep, from = s, s + 1
          end
          kept = string.sub(ids, 1, sep - 1)
          redis.call('JSON.ARRAPPEND', KEYS[1], '$.eid', '"' .. string.sub(ids, sep + 1) .. '"')
          if redis.call('JSON.ARRAPPEND', KEYS[1], '$.ecs', stamp)[1] > n then
            local oldest = tonumber(redis.call('JSON.ARRPOP', KEYS[1], '$.ecs', 0)[1])
            redis.call('JSON.ARRPOP', KEYS[1], '$.eid', 0)
            if oldest > tonumber(hz) then hz = string.format('%.14g', oldest) end
          end
        else
          n = n + 1
        end
        redis.call('JSON.SET', KEYS[1], '$.ids', '"' .. id .. ' ' .. kept .. '"')
        redis.call('JSON.SET', KEYS[1], '$.h[0]', '"L3,' .. wm .. ',' .. cs .. ',' .. hz .. ','
          .. wcs .. ',0,' .. n .. ',' .. id .. '"')
        fast_done = 'a'
      end
    end
  end
end
if fast_done then return fast_done end
