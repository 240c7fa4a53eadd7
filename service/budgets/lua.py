"""The Lua scripts that make each budget operation one atomic Redis step.

Every key a script touches belongs to one team and carries the team's hash tag, so each
script runs inside one Redis Cluster slot. Amounts travel as decimal strings and are
added with HINCRBY (exact 64-bit); only the limit comparison uses Lua numbers, which is
exact because limits stay below 2**53. Time comes from the server (TIME) so replicas
with skewed clocks agree on when a reservation expires.
"""

from __future__ import annotations

# KEYS: reservation, live-reservations zset, done marker, counter...
# ARGV: amount, ttl_ms, record_ttl_s, request_id, then per counter: limit, expire_at (0 = never)
# Returns {0} held, {-1} already held or settled (nothing changed), {i, spent, reserved} denied.
RESERVE = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[3]) == 1 then
  return {-1}
end
local amount = tonumber(ARGV[1])
local n = #KEYS - 3
for i = 1, n do
  local v = redis.call('HMGET', KEYS[i + 3], 'spent', 'reserved')
  local spent = v[1] or '0'
  local reserved = v[2] or '0'
  if tonumber(spent) + tonumber(reserved) + amount > tonumber(ARGV[3 + 2 * i]) then
    return {i, spent, reserved}
  end
end
local names = {}
for i = 1, n do
  local key = KEYS[i + 3]
  redis.call('HINCRBY', key, 'reserved', ARGV[1])
  local expire_at = tonumber(ARGV[4 + 2 * i])
  if expire_at > 0 then redis.call('EXPIREAT', key, expire_at) end
  names[i] = key
end
local t = redis.call('TIME')
local expiry = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'amount', ARGV[1], 'counters', table.concat(names, '\\n'),
           'expiry', string.format('%d', expiry))
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], string.format('%d', expiry), ARGV[4])
return {0}
"""

# Shared by settle and reap: give back a live reservation's hold and forget it.
_RELEASE = """
local function release(record_key, zset_key, request_id)
  local rec = redis.call('HMGET', record_key, 'amount', 'counters')
  redis.call('ZREM', zset_key, request_id)
  if not rec[1] then return 0 end
  if rec[1] ~= '0' then
    for key in string.gmatch(rec[2] or '', '[^\\n]+') do
      -- A counter whose period is long gone may have expired; do not resurrect it negative.
      if redis.call('EXISTS', key) == 1 then
        redis.call('HINCRBY', key, 'reserved', '-' .. rec[1])
      end
    end
  end
  redis.call('DEL', record_key)
  return 1
end
"""

# KEYS: reservation, live-reservations zset, done marker, outbox stream, counter...
# ARGV: request_id, cost, event bytes, done_ttl_s, then per counter: expire_at (0 = never)
# Returns {settled (1/0), the charge's outbox entry id (kept in the done marker, so also when
# already settled), spent/reserved before for each counter..., then after...}.
SETTLE = (
    _RELEASE
    + """
local n = #KEYS - 4
local out = {0, ''}
for i = 1, n do
  local v = redis.call('HMGET', KEYS[i + 4], 'spent', 'reserved')
  out[#out + 1] = v[1] or '0'
  out[#out + 1] = v[2] or '0'
end
local done = redis.call('GET', KEYS[3])
if done then
  out[2] = done
  for i = 3, 2 * n + 2 do out[#out + 1] = out[i] end
  return out
end
out[1] = 1
release(KEYS[1], KEYS[2], ARGV[1])
for i = 1, n do
  local key = KEYS[i + 4]
  -- Never clamp: money spent beyond the hold was still spent.
  redis.call('HINCRBY', key, 'spent', ARGV[2])
  local expire_at = tonumber(ARGV[4 + i])
  if expire_at > 0 then redis.call('EXPIREAT', key, expire_at) end
end
out[2] = redis.call('XADD', KEYS[4], '*', 'e', ARGV[3])
redis.call('SET', KEYS[3], out[2], 'EX', ARGV[4])
for i = 1, n do
  local v = redis.call('HMGET', KEYS[i + 4], 'spent', 'reserved')
  out[#out + 1] = v[1] or '0'
  out[#out + 1] = v[2] or '0'
end
return out
"""
)

# KEYS: live-reservations zset. ARGV: reservation key prefix, max reservations per call.
# Returns how many live reservations were released.
REAP = (
    _RELEASE
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now),
                       'LIMIT', 0, tonumber(ARGV[2]))
local released = 0
for _, id in ipairs(ids) do
  released = released + release(ARGV[1] .. id, KEYS[1], id)
end
return released
"""
)

# KEYS: reservation, live-reservations zset. ARGV: request_id, ttl_ms, record_ttl_s.
# Returns 1 when the reservation was live and now expires ttl_ms from now, else 0.
EXTEND = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local t = redis.call('TIME')
local expiry = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'expiry', string.format('%d', expiry))
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], string.format('%d', expiry), ARGV[1])
return 1
"""

# KEYS: outbox stream, counter... ARGV: token, then per counter: expire_at (0 = never).
# Returns {server time in ms, the outbox's last generated id ('0-0' if none), spent of each counter}.
# Every charge counted in those spents was appended to the outbox at or before that id, and every
# later one after it; the token marks each counter as snapshotted by this caller (see ADJUST).
SNAPSHOT = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = '0-0'
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then last = info[i + 1] end
  end
end
local out = {string.format('%d', now_ms), last}
for i = 2, #KEYS do
  out[#out + 1] = redis.call('HGET', KEYS[i], 'spent') or '0'
  redis.call('HSET', KEYS[i], 'rb', ARGV[1])
  local expire_at = tonumber(ARGV[i])
  if expire_at > 0 then redis.call('EXPIREAT', KEYS[i], expire_at) end
end
return out
"""

# KEYS: counter... ARGV: token, then per counter: delta, expire_at (0 = never).
# Adds each delta to a counter still marked with this token (no snapshot taken since), then
# drops the mark. Returns how many counters moved.
ADJUST = """
local moved = 0
for i = 1, #KEYS do
  if redis.call('HGET', KEYS[i], 'rb') == ARGV[1] then
    redis.call('HINCRBY', KEYS[i], 'spent', ARGV[2 * i])
    redis.call('HDEL', KEYS[i], 'rb')
    local expire_at = tonumber(ARGV[2 * i + 1])
    if expire_at > 0 then redis.call('EXPIREAT', KEYS[i], expire_at) end
    moved = moved + 1
  end
end
return moved
"""
