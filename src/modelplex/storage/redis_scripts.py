"""The Lua scripts behind the Redis Counters: each operation is one script, so it is atomic on the
server and costs one round trip.

Keys, under the store's prefix P:

    P w:<scope>:<kind>:<window>  hash   second -> amount, t (total), o (oldest second)
                                        rate window; PEXPIRE window + 2 s
    P c:<scope>                  zset   lease -> expires at    concurrency; PEXPIRE its longest lease
    P b:<scope>|<period key>     hash   spent, reserved        budget counter
    P h:<scope>|<period key>     hash   reservation -> amount  what each open reservation holds
    P q:<scope>|<period key>     zset   reservation -> expires at
    P r:<reservation>            hash   amount, counters (JSON), forget at   PEXPIRE 2 x TTL;
                                        deleted when settled or released

b, h and q of a day or month live until the period ends plus a grace; those of `total` do not
expire (they are the budget). A reservation's hold is released lazily: whoever next touches the
counter (reserve, budget_state) moves every due hold out of `reserved`. Settle and release find the
counters through the reservation's record, so their keys are built inside the script: the scripts
need a single Redis (or a primary with replicas), not a cluster.
Numbers computed in Lua are written back with '%d': Lua's default formatting turns 1e15 into
'1e+15', which HINCRBY refuses.
"""

from __future__ import annotations

from typing import Final

# A window hash holds `t`, the total of its seconds, and `o`, a second no field is older than, so
# a take reads two fields and drops only the seconds that left since the last one. A hash idle
# for long (or a caller's clock that jumped) is rescanned instead.
_WINDOW: Final = """
local function window_total(key, oldest)
  local meta = redis.call('HMGET', key, 't', 'o')
  local total, o = tonumber(meta[1]) or 0, tonumber(meta[2])
  if o == nil or o >= oldest then return total end
  if oldest - o <= 64 then
    local gone = {}
    for s = o, oldest - 1 do gone[#gone + 1] = string.format('%d', s) end
    for _, amount in ipairs(redis.call('HMGET', key, unpack(gone))) do
      total = total - (tonumber(amount) or 0)
    end
    redis.call('HDEL', key, unpack(gone))
  else
    local flat, stale = redis.call('HGETALL', key), {}
    total = 0
    for j = 1, #flat, 2 do
      local s = tonumber(flat[j])
      if s and s < oldest then
        stale[#stale + 1] = flat[j]
      elseif s then
        total = total + tonumber(flat[j + 1])
      end
    end
    for j = 1, #stale, 1000 do
      redis.call('HDEL', key, unpack(stale, j, math.min(j + 999, #stale)))
    end
  end
  redis.call('HSET', key, 't', string.format('%d', total), 'o', string.format('%d', oldest))
  return total
end

-- The second from which the window has room for `need` more, its seconds sorted (rejections only).
local function room_from(key, oldest, second, need)
  local flat, seconds = redis.call('HGETALL', key), {}
  for j = 1, #flat, 2 do
    local s = tonumber(flat[j])
    if s and s >= oldest then seconds[#seconds + 1] = {s, tonumber(flat[j + 1])} end
  end
  table.sort(seconds, function(a, b) return a[1] < b[1] end)
  local room = second
  for _, entry in ipairs(seconds) do
    need, room = need - entry[2], entry[1]
    if need <= 0 then break end
  end
  return room
end
"""

# KEYS: one window per rule. ARGV: second, check (1|0), then limit, window_s, amount per rule.
# Returns {rejected rule (1-based) or 0, second the rejected window has room from, totals...}.
TAKE: Final = _WINDOW + """
local second = tonumber(ARGV[1])
local totals = {}
for i = 1, #KEYS do
  totals[i] = window_total(KEYS[i], second - tonumber(ARGV[3 * i + 1]))
end
if ARGV[2] == '1' then
  for i = 1, #KEYS do
    local limit, amount = tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 2])
    if totals[i] + amount > limit then
      local oldest = second - tonumber(ARGV[3 * i + 1])
      return {i, room_from(KEYS[i], oldest, second, totals[i] + amount - limit), unpack(totals)}
    end
  end
end
for i = 1, #KEYS do
  local key = KEYS[i]
  redis.call('HINCRBY', key, ARGV[1], ARGV[3 * i + 2])
  redis.call('HINCRBY', key, 't', ARGV[3 * i + 2])
  local o = tonumber(redis.call('HGET', key, 'o'))
  if o == nil or second < o then redis.call('HSET', key, 'o', ARGV[1]) end
  redis.call('PEXPIRE', key, (tonumber(ARGV[3 * i + 1]) + 2) * 1000)
end
return {0, 0, unpack(totals)}
"""

# KEYS: one lease set per scope. ARGV: lease, now, expires at, ttl ms, then the limit per scope.
# Returns the 1-based index of the full scope, or 0.
ACQUIRE: Final = """
local lease = ARGV[1]
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', ARGV[2])
  if not redis.call('ZSCORE', KEYS[i], lease) then
    if redis.call('ZCARD', KEYS[i]) >= tonumber(ARGV[4 + i]) then return i end
  end
end
local ttl = tonumber(ARGV[4])
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], ARGV[3], lease)
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return 0
"""

# KEYS: one lease set per scope. ARGV: lease.
RELEASE_LEASE: Final = """
for i = 1, #KEYS do redis.call('ZREM', KEYS[i], ARGV[1]) end
return 0
"""

# Moves the holds of `q` that are due at `now` out of `b`'s reserved amount.
_COLLECT: Final = """
local function collect(b, h, q, now)
  while true do
    local due = redis.call('ZRANGEBYSCORE', q, '-inf', now, 'LIMIT', 0, 500)
    if #due == 0 then return end
    local held = 0
    for _, amount in ipairs(redis.call('HMGET', h, unpack(due))) do
      held = held + (tonumber(amount) or 0)
    end
    redis.call('HINCRBY', b, 'reserved', string.format('%d', -held))
    redis.call('HDEL', h, unpack(due))
    redis.call('ZREM', q, unpack(due))
  end
end
"""

# KEYS: b, h, q per distinct counter, then the reservation's record.
# ARGV: reservation, now, amount, expires at, record ttl ms, counters JSON, forget at (the
# caller's clock: the record counts as gone from then on), then per counter its lifetime in ms
# (-1: for ever), then per rule its counter (1-based), cap, hard (1|0).
# Returns {allowed (1|0), rejected rule (1-based) or 0, spent per counter..., reserved per counter...}.
RESERVE: Final = _COLLECT + """
local id, now, amount = ARGV[1], ARGV[2], tonumber(ARGV[3])
local n = (#KEYS - 1) / 3
local record = KEYS[#KEYS]
local spent, reserved = {}, {}
for j = 1, n do
  local b = KEYS[3 * j - 2]
  collect(b, KEYS[3 * j - 1], KEYS[3 * j], now)
  local v = redis.call('HMGET', b, 'spent', 'reserved')
  spent[j], reserved[j] = tonumber(v[1]) or 0, tonumber(v[2]) or 0
end
local function reply(allowed, rejected)
  local out = {allowed, rejected}
  for j = 1, n do out[#out + 1] = spent[j] end
  for j = 1, n do out[#out + 1] = reserved[j] end
  return out
end
local forget_at = redis.call('HGET', record, 'forget_at')
if forget_at and tonumber(forget_at) > tonumber(now) then return reply(1, 0) end
local rules = 7 + n
for k = 1, (#ARGV - rules) / 3 do
  local j = tonumber(ARGV[rules + 3 * k - 2])
  if ARGV[rules + 3 * k] == '1' and spent[j] + reserved[j] + amount > tonumber(ARGV[rules + 3 * k - 1]) then
    return reply(0, k)
  end
end
for j = 1, n do
  local b, h, q = KEYS[3 * j - 2], KEYS[3 * j - 1], KEYS[3 * j]
  redis.call('HINCRBY', b, 'reserved', ARGV[3])
  redis.call('HSET', h, id, ARGV[3])
  redis.call('ZADD', q, ARGV[4], id)
  local life = tonumber(ARGV[7 + j])
  if life >= 0 then
    redis.call('PEXPIRE', b, life)
    redis.call('PEXPIRE', h, life)
    redis.call('PEXPIRE', q, life)
  end
  reserved[j] = reserved[j] + amount
end
redis.call('HSET', record, 'amount', ARGV[3], 'counters', ARGV[6], 'forget_at', ARGV[7])
redis.call('PEXPIRE', record, ARGV[5])
return reply(1, 0)
"""

# KEYS: the reservation's record. ARGV: prefix, reservation, settle (1) or release (0), actual,
# now (settle only). A hold already collected (expired) is simply gone; a settle still adds the
# actual amount, unless the record is past its lifetime.
FINISH: Final = """
local prefix, id = ARGV[1], ARGV[2]
local rec = redis.call('HMGET', KEYS[1], 'counters', 'forget_at')
if not rec[1] then return 0 end
redis.call('DEL', KEYS[1])
if ARGV[3] == '1' and tonumber(rec[2]) <= tonumber(ARGV[5]) then return 0 end
for _, name in ipairs(cjson.decode(rec[1])) do
  local b, h = prefix .. 'b:' .. name, prefix .. 'h:' .. name
  local held = redis.call('HGET', h, id)
  if held then
    redis.call('HDEL', h, id)
    redis.call('ZREM', prefix .. 'q:' .. name, id)
    redis.call('HINCRBY', b, 'reserved', string.format('%d', -tonumber(held)))
  end
  if ARGV[3] == '1' then redis.call('HINCRBY', b, 'spent', ARGV[4]) end
end
return 1
"""

# KEYS: b, h, q of one counter. ARGV: now. Returns {spent, reserved}.
STATE: Final = _COLLECT + """
collect(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
local v = redis.call('HMGET', KEYS[1], 'spent', 'reserved')
return {tonumber(v[1]) or 0, tonumber(v[2]) or 0}
"""
