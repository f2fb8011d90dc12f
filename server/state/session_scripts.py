"""The Lua scripts of the Redis session store (server.state.sessions): one per write,
so that a write is all-or-nothing even if the node dies in the middle of it.

Every script but CREATE and TAKEOVER starts with FENCE: it refuses a writer that is
not the session's owner (``moved``) or a session that is gone (``gone``), and defines
``touch()``, which renews the TTL of the session's keys.

The journal's writes (APPEND, MARK, COMMIT, CANCEL, ACK) then pass SEQ: the record
counts the writes applied to it (``w``) and the writer says how many it made; when
they differ the store lost writes behind the writer's back (a failover to a replica
that had not received them, Redis replication being asynchronous), and the write is
refused (``lost``) instead of being numbered from the wrong place.
"""

# KEYS: record hash, text string, marks list, frames stream, chunk PCM string.
# ARGV[1]: owner, ARGV[2]: ttl ms.
FENCE = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if not owner then return 'gone' end
if owner ~= ARGV[1] then return 'moved' end
local function touch()
  for i = 1, 5 do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
end
"""

# ARGV[3]: the writes the writer made to the record ('': not known, unchecked).
# Each sequenced script's own arguments start at ARGV[4].
SEQ = """
local w = tonumber(redis.call('HGET', KEYS[1], 'w') or '0')
if ARGV[3] ~= '' and w ~= tonumber(ARGV[3]) then return 'lost' end
redis.call('HSET', KEYS[1], 'w', w + 1)
"""

CREATE = """
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'meta', ARGV[3], 'maxlen', ARGV[4],
  'epoch', 0, 'frames', 0, 'w', 0,
  'acked', -1, 'done_chars', 0, 'marks_done', 0, 'finished', 0, 'carry', '', 'segments', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 'ok'
"""

APPEND = (
    FENCE
    + SEQ
    + """
redis.call('APPEND', KEYS[2], ARGV[4])
touch()
return 'ok'
"""
)

MARK = (
    FENCE
    + SEQ
    + """
redis.call('RPUSH', KEYS[3], ARGV[4])
touch()
return 'ok'
"""
)

# ARGV[4..11]: chunk ("index:first:chars" or ""), its PCM, chars, marks, finished, carry,
# segments, chunk done; then (message, audio) pairs.
COMMIT = (
    FENCE
    + SEQ
    + """
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'chunk', ARGV[4])
  redis.call('SET', KEYS[5], ARGV[5])
end
local n = tonumber(redis.call('HGET', KEYS[1], 'frames'))
local maxlen = redis.call('HGET', KEYS[1], 'maxlen')
for i = 12, #ARGV, 2 do
  if ARGV[i] == '' then
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', maxlen, '*', 'n', n, 'a', ARGV[i + 1])
  else
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', maxlen, '*', 'n', n, 'a', ARGV[i + 1],
      'm', ARGV[i])
  end
  n = n + 1
end
redis.call('HSET', KEYS[1], 'frames', n, 'carry', ARGV[9], 'segments', ARGV[10])
redis.call('HINCRBY', KEYS[1], 'done_chars', ARGV[6])
redis.call('HINCRBY', KEYS[1], 'marks_done', ARGV[7])
if ARGV[8] == '1' then redis.call('HSET', KEYS[1], 'finished', 1) end
if ARGV[11] == '1' then
  redis.call('HDEL', KEYS[1], 'chunk')
  redis.call('DEL', KEYS[5])
end
touch()
return 'ok'
"""
)

# ARGV[4..6]: frames sent, characters and marks accepted (all of them are dropped).
# Frames committed but never sent are deleted: the next chunk's frames take their numbers.
CANCEL = (
    FENCE
    + SEQ
    + """
local sent = tonumber(ARGV[4])
local more = true
while more do
  local tail = redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', 100)
  if #tail == 0 then break end
  for _, e in ipairs(tail) do
    local f = e[2]
    local n = -1
    for j = 1, #f, 2 do if f[j] == 'n' then n = tonumber(f[j + 1]) end end
    if n < sent then more = false; break end
    redis.call('XDEL', KEYS[4], e[1])
  end
end
local frames = tonumber(redis.call('HGET', KEYS[1], 'frames'))
if sent < frames then redis.call('HSET', KEYS[1], 'frames', sent) end
redis.call('HSET', KEYS[1], 'done_chars', ARGV[5], 'marks_done', ARGV[6], 'carry', '')
redis.call('HDEL', KEYS[1], 'chunk')
redis.call('DEL', KEYS[5])
touch()
return 'ok'
"""
)

ACK = (
    FENCE
    + SEQ
    + """
if tonumber(ARGV[4]) > tonumber(redis.call('HGET', KEYS[1], 'acked')) then
  redis.call('HSET', KEYS[1], 'acked', ARGV[4])
end
touch()
return 'ok'
"""
)

HEARTBEAT = FENCE + "\ntouch()\nreturn 'ok'\n"

POISON = FENCE + "\nredis.call('HSET', KEYS[1], 'broken', 1)\nreturn 'ok'\n"

DELETE = FENCE + "\nredis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])\nreturn 'ok'\n"

TAKEOVER = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if redis.call('HGET', KEYS[1], 'broken') then return 'broken' end
if ARGV[3] ~= '' and redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[3] then return 'used' end
redis.call('HSET', KEYS[1], 'owner', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'epoch', 1)
for i = 1, 5 do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
return {redis.call('HGETALL', KEYS[1]), redis.call('GET', KEYS[2]) or '',
  redis.call('LRANGE', KEYS[3], 0, -1), redis.call('GET', KEYS[5]) or ''}
"""
