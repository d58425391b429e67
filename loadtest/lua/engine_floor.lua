-- The no-logic floor of any atomic read-check-write of a profile's history
-- (make bench-engine, loadtest/bench_engine.py): enter a script, read the front item
-- with one JSON command, write it back with one JSON.SET, decide nothing. Whatever a
-- heartbeat's script costs beyond this is its logic and its extra commands.
--
-- KEYS[1]: a history document with at least one item; it is left as it was.

local raw = redis.call('JSON.GET', KEYS[1], '$.h[0]') -- '["<the item, as JSON text>"]'
redis.call('JSON.SET', KEYS[1], '$.h[0]', string.sub(raw, 2, -2))
return 1
