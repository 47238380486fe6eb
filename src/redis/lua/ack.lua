-- ack: KEYS[1] = meta; ARGV = now, max_ms, id, token, completed jobs to keep.
-- Returns {kind, started} or false when the lease is not held.
local now = tonumber(ARGV[1])
local p = prefix_of(KEYS[1])
local id = ARGV[3]
maintain(p, now, tonumber(ARGV[2]))
if not holds(p, id, ARGV[4]) then
  return false
end
local j = jk(p, id)
local f = redis.call('HMGET', j, 'kind', 'started', 'key')
redis.call('ZREM', p .. 'active', id)
redis.call('HDEL', j, 'tok', 'until', 'started')
redis.call('HSET', j, 'state', 'completed', 'fin', now)
redis.call('ZADD', p .. 'done', now, id)
key_done(p, id, f[3], now)
local over = redis.call('ZCARD', p .. 'done') - tonumber(ARGV[5])
if over > 0 then
  local old = redis.call('ZPOPMIN', p .. 'done', over)
  for i = 1, #old, 2 do
    redis.call('DEL', jk(p, old[i]))
  end
end
return { f[1], f[2] }
