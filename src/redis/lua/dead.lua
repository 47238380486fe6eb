-- dead: KEYS[1] = meta; ARGV = now, max_ms, op (requeue|purge), 'all' or 'ids', ids...
-- Requeue puts dead letters back to waiting (attempts reset, history kept, at the back of
-- their key's FIFO); purge deletes them. 'all' takes at most 1000 per call (the caller loops).
-- Returns {count} or {'notdead', id} (then nothing changed).
local now = tonumber(ARGV[1])
local p = prefix_of(KEYS[1])
maintain(p, now, tonumber(ARGV[2]))
local ids
if ARGV[4] == 'all' then
  ids = redis.call('ZRANGE', p .. 'dead', 0, 999)
else
  ids = {}
  for i = 5, #ARGV do
    if not redis.call('ZSCORE', p .. 'dead', ARGV[i]) then
      return { 'notdead', ARGV[i] }
    end
    ids[#ids + 1] = ARGV[i]
  end
end
local n = 0
for _, id in ipairs(ids) do
  if redis.call('ZREM', p .. 'dead', id) == 1 then
    n = n + 1
    local j = jk(p, id)
    if ARGV[3] == 'purge' then
      redis.call('DEL', j)
    else
      redis.call('HSET', j, 'state', 'waiting', 'att', 0, 'run_at', now)
      redis.call('HDEL', j, 'fin')
      redis.call('ZADD', p .. 'pending', now, id)
      arrive(p, id, redis.call('HGET', j, 'key'), now)
    end
  end
end
return { n }
