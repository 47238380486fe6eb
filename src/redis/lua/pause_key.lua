-- pause_key: KEYS[1] = meta; ARGV = now, max_ms, key, until. Holds back the key's jobs until
-- `until`; its head, if placed, moves to delayed until then.
local now = tonumber(ARGV[1])
local p = prefix_of(KEYS[1])
maintain(p, now, tonumber(ARGV[2]))
local untl = tonumber(ARGV[4])
local hk = p .. 'khold:' .. ARGV[3]
if tonumber(redis.call('GET', hk) or '0') >= untl then
  return 0
end
redis.call('SET', hk, ARGV[4], 'PX', math.max(1, untl - now))
local head = redis.call('LINDEX', p .. 'pk:' .. ARGV[3], 0)
if head and redis.call('HGET', jk(p, head), 'state') ~= 'active' then
  unplace(p, head, redis.call('HGET', jk(p, head), 'kind'))
  place(p, head, now)
end
return 1
