-- enqueue: KEYS = meta key of each queue of the batch; ARGV = now, max_ms, idem token,
-- idem ttl ms, job count, then 15 fields per job (queue index, id, kind, payload, prio, key,
-- dedup key, dedup ttl ms, run_at, r_max, r_base, r_factor, r_cap, r_jit, timeout ms or 0).
-- All or nothing: everything was validated by the caller; nothing here can fail half-way.
-- Returns {answer, replayed}: answer is "id:dup,id:dup,..." (dup 0|1).
local now = tonumber(ARGV[1])
local idem = prefix_of(KEYS[1]) .. 'idem:' .. ARGV[3]
local done = redis.call('GET', idem)
if done then
  return { done, 1 }
end
local n = tonumber(ARGV[5])
local out = {}
local claimed = {}
for i = 0, n - 1 do
  local b = 6 + i * 15
  local qi = tonumber(ARGV[b])
  local p = prefix_of(KEYS[qi])
  local id, kind, payload, prio = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
  local key, dedup, dttl, run_at = ARGV[b + 5], ARGV[b + 6], tonumber(ARGV[b + 7]), tonumber(ARGV[b + 8])
  local dup = nil
  if dedup ~= '' then
    local dk = p .. 'dedup:' .. dedup
    dup = claimed[dk]
    if not dup then
      local v = redis.call('GET', dk)
      if v then
        local sep = string.find(v, '|', 1, true)
        if tonumber(string.sub(v, sep + 1)) > now then
          dup = string.sub(v, 1, sep - 1)
        end
      end
    end
    if not dup then
      claimed[dk] = id
      redis.call('SET', dk, id .. '|' .. (now + dttl), 'PX', dttl)
    end
  end
  if dup then
    out[#out + 1] = dup .. ':1'
  else
    local j = jk(p, id)
    redis.call('HSET', j, 'id', id, 'kind', kind, 'payload', payload, 'prio', prio, 'state', 'waiting', 'att', 0,
      'r_max', ARGV[b + 9], 'r_base', ARGV[b + 10], 'r_factor', ARGV[b + 11], 'r_cap', ARGV[b + 12],
      'r_jit', ARGV[b + 13], 'created', now, 'run_at', run_at, 'errs', '[]')
    if key ~= '' then
      redis.call('HSET', j, 'key', key)
    end
    if ARGV[b + 14] ~= '0' then
      redis.call('HSET', j, 'timeout', ARGV[b + 14])
    end
    if dedup ~= '' then
      redis.call('HSET', j, 'dedup', dedup)
    end
    redis.call('ZADD', p .. 'pending', run_at, id)
    arrive(p, id, key, now)
    out[#out + 1] = id .. ':0'
  end
end
local answer = table.concat(out, ',')
redis.call('SET', idem, answer, 'PX', tonumber(ARGV[4]))
return { answer, 0 }
