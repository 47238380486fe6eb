-- list: KEYS[1] = meta; ARGV = now, max_ms, state ('' for all), limit.
-- Returns a flat list of field arrays, in the order the jobs would run (completed and dead:
-- most recent first).
local now = tonumber(ARGV[1])
local p = prefix_of(KEYS[1])
maintain(p, now, tonumber(ARGV[2]))
local want, limit = ARGV[3], tonumber(ARGV[4])
local ids = {}
local function add(list)
  for _, id in ipairs(list) do
    if #ids >= limit then
      return
    end
    ids[#ids + 1] = id
  end
end
if want == '' or want == 'waiting' then
  local w = redis.call('ZRANGEBYSCORE', p .. 'pending', '-inf', now)
  local rank = {}
  for _, id in ipairs(w) do
    local f = redis.call('HMGET', jk(p, id), 'prio', 'run_at')
    rank[id] = ready_score(tonumber(f[1]), tonumber(f[2]))
  end
  table.sort(w, function(a, b)
    if rank[a] ~= rank[b] then
      return rank[a] < rank[b]
    end
    return a < b
  end)
  add(w)
end
if want == '' or want == 'active' then
  add(redis.call('ZRANGE', p .. 'active', 0, limit - 1))
end
if want == '' or want == 'delayed' then
  add(redis.call('ZRANGEBYSCORE', p .. 'pending', '(' .. now, '+inf', 'LIMIT', 0, limit))
end
if want == '' or want == 'completed' then
  add(redis.call('ZREVRANGE', p .. 'done', 0, limit - 1))
end
if want == '' or want == 'dead' then
  add(redis.call('ZREVRANGE', p .. 'dead', 0, limit - 1))
end
local out = {}
for i, id in ipairs(ids) do
  out[i] = redis.call('HGETALL', jk(p, id))
end
return out
