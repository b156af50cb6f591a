"""The Lua scripts of the Redis Streams broker: each acknowledgement and its job's counts move in one atomic step."""

# Shared by the scripts: a running or queued job whose upload ended and whose every entry is written (or written
# off as a failed line) is done.
FINISH = """
local function finish_if_done(key, now)
  local st = redis.call('HGET', key, 'status')
  local settled = tonumber(redis.call('HGET', key, 'processed'))
                + tonumber(redis.call('HGET', key, 'write_failed') or '0')
  if (st == 'queued' or st == 'running') and redis.call('HGET', key, 'sealed') == '1'
     and settled >= tonumber(redis.call('HGET', key, 'accepted')) then
    redis.call('HSET', key, 'status', 'succeeded', 'finished_at', now, 'updated_at', now)
    if not redis.call('HGET', key, 'started_at') then redis.call('HSET', key, 'started_at', now) end
  end
end
"""
# KEYS: stream, job; ARGV: group, now, truncated, entry ids...
COMPLETE = (
    FINISH
    + """
local ids = {unpack(ARGV, 4)}
local acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
redis.call('XDEL', KEYS[1], unpack(ids))
if acked > 0 and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HINCRBY', KEYS[2], 'processed', acked)
  redis.call('HINCRBY', KEYS[2], 'truncated', tonumber(ARGV[3]))
  redis.call('HSET', KEYS[2], 'updated_at', ARGV[2])
  finish_if_done(KEYS[2], ARGV[2])
end
return acked
"""
)
# KEYS: stream, job; ARGV: group, now, max errors, errors json (a list, one per entry id), entry ids...
FAIL_LINES = (
    FINISH
    + """
local ids = {unpack(ARGV, 5)}
local acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
redis.call('XDEL', KEYS[1], unpack(ids))
if acked > 0 and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HINCRBY', KEYS[2], 'write_failed', acked)
  local kept = cjson.decode(redis.call('HGET', KEYS[2], 'write_errors') or '[]')
  for _, e in ipairs(cjson.decode(ARGV[4])) do
    if #kept >= tonumber(ARGV[3]) then break end
    table.insert(kept, e)
  end
  redis.call('HSET', KEYS[2], 'write_errors', cjson.encode(kept), 'updated_at', ARGV[2])
  finish_if_done(KEYS[2], ARGV[2])
end
return acked
"""
)
# KEYS: job; ARGV: now, total, rejected, errors json
SEAL = (
    FINISH
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'total', ARGV[2], 'failed', ARGV[3], 'errors', ARGV[4], 'sealed', '1',
           'updated_at', ARGV[1])
finish_if_done(KEYS[1], ARGV[1])
return 1
"""
)
# KEYS: job; ARGV: from-status list (comma separated), to-status, now, timestamp field, error
# KEYS: stream; ARGV: group, consumer names. A consumer is forgotten only while it holds nothing: checked and
# deleted in one step, so an entry it reads in between cannot vanish with it (DELCONSUMER drops its pending list).
FORGET_IDLE = """
local gone = 0
for i = 2, #ARGV do
  if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[i]) == 0 then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[i])
    gone = gone + 1
  end
end
return gone
"""
TRANSITION = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local st = redis.call('HGET', KEYS[1], 'status')
if string.find(',' .. ARGV[1] .. ',', ',' .. st .. ',', 1, true) then
  redis.call('HSET', KEYS[1], 'status', ARGV[2], 'updated_at', ARGV[3], ARGV[4], ARGV[3])
  if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[5]) end
end
return 1
"""
