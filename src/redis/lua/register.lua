-- register: KEYS = queues set, name->number hash, number->name hash, counter;
-- ARGV = queue name, largest number. Returns the queue's number (given once, never reused).
local n = redis.call('HGET', KEYS[2], ARGV[1])
if n then
  return tonumber(n)
end
n = redis.call('INCR', KEYS[4])
if n > tonumber(ARGV[2]) then
  return redis.error_reply('durq: too many queues in this Redis database')
end
redis.call('HSET', KEYS[2], ARGV[1], n)
redis.call('HSET', KEYS[3], n, ARGV[1])
redis.call('SADD', KEYS[1], ARGV[1])
return n
