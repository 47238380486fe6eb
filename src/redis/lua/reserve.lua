-- reserve: KEYS = meta key of each requested queue; ARGV = now, max_ms, lease ms, token,
-- then the kinds to skip. Takes the best ready job across the queues: highest priority, then
-- earliest ready time, then lowest id. Returns {queue index, job fields...} or false.
-- With lease 'peek' it takes nothing and returns {score, id} of that job (Redis Cluster: the
-- caller compares the queues' heads, then takes from the best queue alone).
local now = tonumber(ARGV[1])
local max_ms = tonumber(ARGV[2])
local skip = {}
for i = 5, #ARGV do
  skip[ARGV[i]] = true
end
local best = nil
for qi = 1, #KEYS do
  local p = prefix_of(KEYS[qi])
  maintain(p, now, max_ms)
  if redis.call('HGET', KEYS[qi], 'paused') ~= '1' then
    for _, kind in ipairs(redis.call('SMEMBERS', p .. 'kinds')) do
      if not skip[kind] then
        local head = redis.call('ZRANGE', p .. 'ready:' .. kind, 0, 0, 'WITHSCORES')
        if head[1] then
          local score = tonumber(head[2])
          if not best or score < best.score or (score == best.score and head[1] < best.id) then
            best = { score = score, id = head[1], qi = qi, p = p, kind = kind }
          end
        end
      end
    end
  end
end
if not best then
  return false
end
if ARGV[3] == 'peek' then
  return { string.format('%.17g', best.score), best.id }
end
local p, id = best.p, best.id
local j = jk(p, id)
redis.call('ZREM', p .. 'ready:' .. best.kind, id)
redis.call('ZREM', p .. 'pending', id)
redis.call('HINCRBY', j, 'att', 1)
local untl = now + tonumber(ARGV[3])
redis.call('HSET', j, 'state', 'active', 'tok', ARGV[4], 'until', untl, 'started', now)
redis.call('ZADD', p .. 'active', untl, id)
local out = { best.qi }
for _, v in ipairs(redis.call('HGETALL', j)) do
  out[#out + 1] = v
end
return out
