"""The judge budget's Redis scripts (evaluator.budget.admission runs them): admission against
every cap at once, with the day's ledger and the run_id check, and the release of deferred
tail traces whose window has ended."""

# ARGV: nscopes, per scope (minute key, minute cap, minute end, day key, day cap, day end,
# cumulative cap: today's evaluations by the end of this minute, 0 = none; refused until the
# minute ends), the ledger key, whether to honour it (1: an evaluation already in the
# ledger is admitted free; 0: charged again, the ledger still written), ngroups, per group
# (m, m evaluations: ledger field or '' for none, the value to store there (p), the
# rubric's scope index; every evaluation also counts against scope 1, the shared one).
# Returns per group 0 (admitted) or the end of the latest window that refused it (epoch
# seconds): a group is admitted whole or not at all.
#
# The ledger (`{prefix}:budget:ledger:{day}`, a hash) makes admission idempotent within the
# UTC day where the caller asks for it: an evaluation whose field is already there was
# charged by an earlier call (a drain whose intents then failed to commit re-processes its
# parked batch; a job's retry escalates again) and is admitted again for free. A batch drawn
# for the first time does not honour it: the same trace enqueued again later in the day is
# a new run of the judge, charged again. Only evaluations new to the ledger (or all, when
# it is not honoured) are checked against the caps, charged and written to it, in this
# script, with the counters. Its memory is bounded: it holds only admitted evaluations of a
# capped scope (the caller passes '' for the others), so at most the day's caps, and it
# expires after two days.
#
# First of all the script compares Redis's run_id (INFO server) with the one the counters
# were rebuilt under (`{prefix}:budget:source`, written by BudgetGate.rebuild): when they
# differ (Redis restarted, empty or from an older snapshot) it admits nothing and returns
# {-2}; the caller rebuilds the counters from SQL and asks again.
ADMIT_LUA = """
local rid = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
if redis.call('GET', KEYS[1]) ~= rid then return {-2} end
local ns = tonumber(ARGV[1])
local scopes = {}
local i = 2
for s = 1, ns do
  scopes[s] = {mk = ARGV[i], mc = tonumber(ARGV[i + 1]), me = tonumber(ARGV[i + 2]),
               dk = ARGV[i + 3], dc = tonumber(ARGV[i + 4]), de = tonumber(ARGV[i + 5]),
               cc = tonumber(ARGV[i + 6]),
               mu = tonumber(redis.call('GET', ARGV[i]) or '0'),
               du = tonumber(redis.call('GET', ARGV[i + 3]) or '0'), n = 0}
  i = i + 7
end
local lk = ARGV[i]
local honour = ARGV[i + 1] == '1'
local ng = tonumber(ARGV[i + 2])
i = i + 3
local out = {}
local wrote = false
for g = 1, ng do
  local m = tonumber(ARGV[i])
  i = i + 1
  local need = {}
  local fresh = {}
  for k = 1, m do
    local f, s = ARGV[i], tonumber(ARGV[i + 2])
    if f == '' or not honour or redis.call('HEXISTS', lk, f) == 0 then
      fresh[#fresh + 1] = i
      need[1] = (need[1] or 0) + 1
      if s ~= 1 then need[s] = (need[s] or 0) + 1 end
    end
    i = i + 3
  end
  local wait = 0
  for s, n in pairs(need) do
    local sc = scopes[s]
    if sc.mc > 0 and sc.mu + n > sc.mc then wait = math.max(wait, sc.me) end
    if sc.dc > 0 and sc.du + n > sc.dc then wait = math.max(wait, sc.de) end
    if sc.cc > 0 and sc.du + n > sc.cc then wait = math.max(wait, sc.me) end
  end
  if wait == 0 then
    for s, n in pairs(need) do
      local sc = scopes[s]
      sc.mu = sc.mu + n
      sc.du = sc.du + n
      sc.n = sc.n + n
    end
    for _, at in ipairs(fresh) do
      if ARGV[at] ~= '' then
        redis.call('HSET', lk, ARGV[at], ARGV[at + 1])
        wrote = true
      end
    end
  end
  out[g] = wait
end
for s = 1, ns do
  local sc = scopes[s]
  if sc.n > 0 then
    redis.call('INCRBY', sc.mk, sc.n)
    redis.call('EXPIRE', sc.mk, 180)
    redis.call('INCRBY', sc.dk, sc.n)
    redis.call('EXPIRE', sc.dk, 172800)
  end
end
if wrote then redis.call('EXPIRE', lk, 172800) end
return out
"""

# KEYS: deferred zset, intake list; ARGV: now (s), limit. Due entries go back on the intake.
RELEASE_LUA = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #due > 0 then
  redis.call('ZREM', KEYS[1], unpack(due))
  redis.call('RPUSH', KEYS[2], unpack(due))
end
return #due
"""
