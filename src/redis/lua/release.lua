-- release: KEYS[1] = meta; ARGV = now, max_ms, id, token. The attempt does not count.
-- Returns 1, or false when the lease is not held.
local now = tonumber(ARGV[1])
local p = prefix_of(KEYS[1])
local id = ARGV[3]
maintain(p, now, tonumber(ARGV[2]))
if not holds(p, id, ARGV[4]) then
  return false
end
local j = jk(p, id)
redis.call('ZREM', p .. 'active', id)
redis.call('HDEL', j, 'tok', 'until', 'started')
redis.call('HINCRBY', j, 'att', -1)
redis.call('HSET', j, 'state', 'waiting')
redis.call('ZADD', p .. 'pending', redis.call('HGET', j, 'run_at'), id)
place(p, id, now)
return 1
