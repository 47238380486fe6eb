-- heartbeat: KEYS[1] = meta; ARGV = now, max_ms, id, token, lease ms.
-- Returns the new deadline or false when the lease is not held.
local now = tonumber(ARGV[1])
local p = prefix_of(KEYS[1])
maintain(p, now, tonumber(ARGV[2]))
if not holds(p, ARGV[3], ARGV[4]) then
  return false
end
local untl = now + tonumber(ARGV[5])
redis.call('HSET', jk(p, ARGV[3]), 'until', untl)
redis.call('ZADD', p .. 'active', untl, ARGV[3])
return tostring(untl)
