-- abandon: KEYS[1] = meta; ARGV = now, max_ms, id, token. A lease whose holder shuts down
-- ends now; the next call that maintains the queue counts the attempt and runs it again.
local p = prefix_of(KEYS[1])
if not holds(p, ARGV[3], ARGV[4]) then
  return 0
end
redis.call('HSET', jk(p, ARGV[3]), 'until', ARGV[1])
redis.call('ZADD', p .. 'active', ARGV[1], ARGV[3])
return 1
