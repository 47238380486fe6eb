-- stats: KEYS[1] = meta; ARGV = now, max_ms.
-- Returns {waiting, delayed, active, completed, dead, paused, oldest waiting run_at or -1}.
local now = tonumber(ARGV[1])
local p = prefix_of(KEYS[1])
maintain(p, now, tonumber(ARGV[2]))
local oldest = -1
local first = redis.call('ZRANGE', p .. 'pending', 0, 0, 'WITHSCORES')
if first[1] and tonumber(first[2]) <= now then
  oldest = first[2]
end
local paused = 0
if redis.call('HGET', KEYS[1], 'paused') == '1' then
  paused = 1
end
return {
  redis.call('ZCOUNT', p .. 'pending', '-inf', now),
  redis.call('ZCOUNT', p .. 'pending', '(' .. now, '+inf'),
  redis.call('ZCARD', p .. 'active'),
  redis.call('ZCARD', p .. 'done'),
  redis.call('ZCARD', p .. 'dead'),
  paused,
  tostring(oldest),
}
