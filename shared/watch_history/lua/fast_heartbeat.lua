-- The common write, a heartbeat on the front item, in as few instructions as the rules
-- allow: store.py puts this file FIRST in record_progress's script, so that a call it
-- handles returns before the rest of the script defines anything (an EVAL script runs
-- its whole body on every call: each function it defines costs the call a closure).
--
-- It handles a call only when the client marked it (ARGV[1] carries the update's
-- fields after the config: one update, a single record: no older records merged) and
-- the stored front item is that asset's, with no tombstone in the document, the same
-- device (named at the item's lastWatchedAt), the same asset record and nothing kept
-- in the item itself (exactly 10 fields). The update is then newer or it is left to
-- the general path. For that case the rules of update_rules.lua come down to: the
-- update's state (time, position, duration if it has one), firstWatchedAt kept,
-- completed by the event or the threshold, completedAt the update's time if it
-- completes, else kept; device and asset record unchanged. Anything else falls
-- through to the general path (common.lua, update_rules.lua, record_progress.lua),
-- which starts again from the head read here. The property tests hold both paths to
-- the model (tests/model.py): heartbeats in them take this one.
--
-- ARGV[1]: "threshold,maxItems,returnItems" (record_progress.lua), then, when marked,
-- ",assetId,time,position,duration,complete,deviceId,assetRecord" (texts as stored:
-- numbers with 14 significant digits, '' when unset, complete '1' or '').

local FAST_GOT = redis.call('JSON.RESP', KEYS[1], '$.h[0:2]') or {}
local fast_done = nil
do
  local thr, id, time, pos, dur, complete, device, ref = string.match(ARGV[1],
    '^([^,]*),[^,]*,0,([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*)$')
  local h0, text = FAST_GOT[1], FAST_GOT[2]
  if ref ~= nil and ref ~= '' and text ~= nil and #ARGV == 2 then
    local wm, cs, nt, front = string.match(h0, '^L3,([^,]*),([^,]*),[^,]*,[^,]*,([^,]*),[^,]*,(.*)$')
    local last, spos, sdur, fd, done, dad, sdev, sdevat, sd, sref = string.match(text,
      '^([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*)$')
    local ut = tonumber(time)
    if front == id and nt == '0' and sref == ref and sdevat == '' and sdev == device
      and sd ~= '' and ut > tonumber(last) and ut > tonumber(wm) then
      local lastn = tonumber(last)
      local first = lastn - (fd == '' and 0 or tonumber(fd))
      if dur == '' then dur = sdur end
      local durn = tonumber(dur)
      local completes = complete == '1'
        or (durn ~= nil and durn > 0 and tonumber(pos) >= tonumber(thr) * durn)
      local done_at = ''
      if completes then
        done_at = '0'
      elseif dad ~= '' then
        done_at = string.format('%.14g', ut - (lastn - tonumber(dad)))
      end
      -- the change stamp (common.lua, "change stamps"): after the latest, the head's
      -- cs or this item's
      local t = redis.call('TIME')
      local stamp = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
      local latest = math.max(tonumber(cs), lastn + tonumber(sd))
      if latest + 1 > stamp then stamp = latest + 1 end
      redis.call('JSON.SET', KEYS[1], '$.h[1]', '"' .. time .. ',' .. pos .. ',' .. dur .. ','
        .. string.format('%.14g', ut - first) .. ',' .. (completes and '1' or '') .. ','
        .. done_at .. ',' .. device .. ',,' .. string.format('%.14g', stamp - ut) .. ','
        .. ref .. '"')
      fast_done = 'a'
    end
  end
end
if fast_done then return fast_done end
