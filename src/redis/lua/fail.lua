-- fail: KEYS[1] = meta; ARGV = now, max_ms, id, token, error, action (retry|after|giveup),
-- after ms, random unit in [0,1). Returns fail_job's answer or false when the lease is not held.
local now = tonumber(ARGV[1])
local max_ms = tonumber(ARGV[2])
local p = prefix_of(KEYS[1])
maintain(p, now, max_ms)
if not holds(p, ARGV[3], ARGV[4]) then
  return false
end
return fail_job(p, ARGV[3], now, ARGV[5], ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8]), max_ms)
