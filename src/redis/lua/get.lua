-- get: KEYS[1] = meta; ARGV = now, max_ms, id. Returns the job's fields (empty if none).
local p = prefix_of(KEYS[1])
maintain(p, tonumber(ARGV[1]), tonumber(ARGV[2]))
return redis.call('HGETALL', jk(p, ARGV[3]))
