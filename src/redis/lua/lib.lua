-- durq Redis backend: helpers shared by every script (prepended to each one).
--
-- Layout under the prefix P = "durq:{queue}:" (one hash tag, one Cluster slot per queue):
--   P job:<id>      HASH  the job (id = 20-digit zero-padded decimal, also the member below)
--   P pending       ZSET  every waiting or delayed job, by run_at (stats, list)
--   P ready:<kind>  ZSET  jobs that may be taken now, by (255-prio)*2^42 + run_at, then id
--   P kinds         SET   kinds that ever had a ready set
--   P delayed       ZSET  placed jobs not due yet (or held by pause_key), by when they are due
--   P active        ZSET  leased jobs, by lease deadline
--   P pk:<key>      LIST  unfinished jobs of a partition key in enqueue order; only the head
--                         is ever ready, delayed or active
--   P khold:<key>   STRING  pause_key deadline (ms)
--   P dedup:<key>   STRING  "<id>|<expires ms>"
--   P idem:<token>  STRING  the answer of an enqueue already applied
--   P done / dead   ZSET  completed / dead jobs by finish time
--   P meta          HASH  paused = 0|1
-- Times are milliseconds from the caller's clock (ARGV), never Redis' TIME.

local PRIO_UNIT = 4398046511104 -- 2^42: run_at stays below it until year 2109

local function prefix_of(meta_key)
  return string.sub(meta_key, 1, -5)
end

local function jk(p, id)
  return p .. 'job:' .. id
end

local function ready_score(prio, run_at)
  return (255 - prio) * PRIO_UNIT + run_at
end

-- Puts a job that heads its key (or has none) where reserve finds it: ready when due and
-- its key is not held, delayed (until due or the hold ends) otherwise.
local function place(p, id, now)
  local f = redis.call('HMGET', jk(p, id), 'run_at', 'prio', 'kind', 'key')
  local run_at = tonumber(f[1])
  local at = run_at
  if f[4] then
    local hold = tonumber(redis.call('GET', p .. 'khold:' .. f[4]) or '0')
    if hold > now and hold > at then
      at = hold
    end
  end
  if at > now then
    redis.call('ZADD', p .. 'delayed', at, id)
  else
    redis.call('ZADD', p .. 'ready:' .. f[3], ready_score(tonumber(f[2]), run_at), id)
    redis.call('SADD', p .. 'kinds', f[3])
  end
end

-- Takes a job out of ready/delayed (it is about to be placed again or leave).
local function unplace(p, id, kind)
  redis.call('ZREM', p .. 'ready:' .. kind, id)
  redis.call('ZREM', p .. 'delayed', id)
end

-- A new or requeued job joins its key's FIFO; placed only when it heads it.
local function arrive(p, id, key, now)
  if key and key ~= '' then
    local kl = p .. 'pk:' .. key
    if redis.call('RPUSH', kl, id) > 1 then
      return
    end
  end
  place(p, id, now)
end

-- A job finished (completed or dead): the next job of its key may run.
local function key_done(p, id, key, now)
  if not key then
    return
  end
  local kl = p .. 'pk:' .. key
  if redis.call('LINDEX', kl, 0) == id then
    redis.call('LPOP', kl)
    local nxt = redis.call('LINDEX', kl, 0)
    if nxt then
      place(p, nxt, now)
    end
  else
    redis.call('LREM', kl, 1, id)
  end
end

local function clamp_ms(ms, max_ms)
  if ms ~= ms then
    return 0
  end
  if ms < 0 then
    ms = 0
  end
  if ms > max_ms then
    ms = max_ms
  end
  return math.floor(ms)
end

-- RetryPolicy::delay_with_jitter, the same arithmetic in doubles.
local function backoff(f, retry, unit, max_ms)
  local base, factor, cap, jitter = tonumber(f[3]), tonumber(f[4]), tonumber(f[5]), tonumber(f[6])
  local exp = retry - 1
  if exp < 0 then
    exp = 0
  end
  if exp > 64 then
    exp = 64
  end
  local ms = base * factor ^ exp
  if cap > 0 and ms > cap then
    ms = cap
  end
  local d = clamp_ms(ms, max_ms)
  return clamp_ms(d + d * jitter * (2 * unit - 1), max_ms)
end

-- Records a failed attempt of an active job; retries it or dead-letters it.
-- action: 'retry' (policy), 'after' (after_ms), 'giveup'.
-- Returns {'dead', kind, attempt} or {'retry', kind, attempt, run_at}.
local function fail_job(p, id, now, err, action, after_ms, unit, max_ms)
  local j = jk(p, id)
  local f = redis.call('HMGET', j, 'att', 'r_max', 'r_base', 'r_factor', 'r_cap', 'r_jit', 'errs', 'key', 'kind')
  local att = tonumber(f[1])
  redis.call('ZREM', p .. 'active', id)
  redis.call('HDEL', j, 'tok', 'until', 'started')
  local entry = cjson.encode({ attempt = att, at = now, error = err })
  local errs = f[7]
  if errs == '[]' then
    errs = '[' .. entry .. ']'
  else
    errs = string.sub(errs, 1, -2) .. ',' .. entry .. ']'
  end
  redis.call('HSET', j, 'errs', errs)
  if action == 'giveup' or att > tonumber(f[2]) then
    redis.call('HSET', j, 'state', 'dead', 'fin', now)
    redis.call('ZADD', p .. 'dead', now, id)
    key_done(p, id, f[8], now)
    return { 'dead', f[9], att }
  end
  local delay
  if action == 'after' then
    delay = after_ms
  else
    delay = backoff(f, att, unit, max_ms)
  end
  local run_at = now + delay
  redis.call('HSET', j, 'state', 'waiting', 'run_at', run_at)
  redis.call('ZADD', p .. 'pending', run_at, id)
  place(p, id, now)
  return { 'retry', f[9], att, run_at }
end

-- What became due: expired leases count as failed attempts; due delayed jobs become ready.
local function maintain(p, now, max_ms)
  local expired = redis.call('ZRANGEBYSCORE', p .. 'active', '-inf', now, 'LIMIT', 0, 100)
  for _, id in ipairs(expired) do
    fail_job(p, id, now, 'lease expired: the worker stopped or missed its heartbeat', 'after', 0, 0, max_ms)
  end
  local due = redis.call('ZRANGEBYSCORE', p .. 'delayed', '-inf', now, 'LIMIT', 0, 1000)
  for _, id in ipairs(due) do
    redis.call('ZREM', p .. 'delayed', id)
    place(p, id, now)
  end
end

-- True when job `id` is active under token `tok` (after maintain ran).
local function holds(p, id, tok)
  local f = redis.call('HMGET', jk(p, id), 'state', 'tok')
  return f[1] == 'active' and f[2] == tok
end

