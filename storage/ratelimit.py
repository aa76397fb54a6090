"""RedisRateLimiter: the RateLimiter port in Redis, shared by every worker.

Each bucket is a hash `<prefix><key>` with its tokens, when they were measured and
whether a refusal was reported since the last message let through. One Lua script
refills, decides and takes for all the buckets of a message at once (atomic: two workers
never both spend the last token), with the arithmetic of brain.limits.take_all. Time is
Redis's own clock (TIME), the same for every worker; tests may pass a clock. A bucket
expires (PEXPIRE) once it would be full again, so idle people and chats cost nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pydantic import SecretStr

from brain.ports import Admission, Rate
from storage.redis_client import RedisClient

# KEYS: the buckets; ARGV[1]: now in seconds ('' = Redis's clock), then burst and
# per-second refill of each bucket. Returns {allowed, warn, index of the first empty
# bucket (0: none), seconds until it holds a token again (a string: Redis would cut a
# Lua number to an integer)}.
TAKE = """
local now = tonumber(ARGV[1])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local n = #KEYS
local levels, warned, bursts, rates = {}, {}, {}, {}
local empty, first, wait = 0, 0, 0
for i = 1, n do
  local burst = tonumber(ARGV[2 * i])
  local rate = tonumber(ARGV[2 * i + 1])
  bursts[i], rates[i] = burst, rate
  local st = redis.call('HMGET', KEYS[i], 'tokens', 'at', 'warned')
  local tokens = burst
  if st[1] and st[2] then
    tokens = math.min(burst, tonumber(st[1]) + math.max(0, now - tonumber(st[2])) * rate)
  end
  levels[i] = tokens
  warned[i] = (st[3] == '1')
  if tokens < 1 then
    empty = empty + 1
    if first == 0 then first = i end
    wait = math.max(wait, (1 - tokens) / rate)
  end
end
local warn = 0
for i = 1, n do
  local tokens, w = levels[i], warned[i]
  if empty == 0 then
    tokens = tokens - 1
    w = false
  elseif tokens < 1 and not w then
    warn = 1
    w = true
  end
  redis.call('HSET', KEYS[i], 'tokens', string.format('%.17g', tokens),
    'at', string.format('%.17g', now), 'warned', w and '1' or '0')
  redis.call('PEXPIRE', KEYS[i], math.ceil((bursts[i] - tokens) / rates[i] * 1000) + 1000)
end
local allowed = 0
if empty == 0 then allowed = 1 end
return {allowed, warn, first, string.format('%.17g', wait)}
"""


class RedisRateLimiter:
    """Token buckets in Redis (`url`: redis:// or rediss://), keys under `prefix`."""

    def __init__(
        self,
        url: SecretStr | str,
        *,
        prefix: str = "tomo:limit:",
        clock: Callable[[], float] | None = None,
        retries: int = 2,
    ) -> None:
        self._prefix = prefix
        self._clock = clock
        self._client = RedisClient(
            url, retries=retries, backoff_cap_s=0.5, backoff_base_s=0.02, connect_timeout_s=2.0
        )
        self._take = self._client.redis.register_script(TAKE)

    def __repr__(self) -> str:
        return f"RedisRateLimiter({self._client.where})"

    async def take(self, buckets: Mapping[str, Rate]) -> Admission:
        if not buckets:
            return Admission(allowed=True)
        keys = list(buckets)
        args: list[str] = [repr(self._clock()) if self._clock is not None else ""]
        for key in keys:
            args += [str(buckets[key].burst), repr(buckets[key].per_second)]
        with self._client.errors("taking a rate token"):
            allowed, warn, first, wait = await self._take(
                keys=[self._prefix + key for key in keys], args=args
            )
        if int(allowed):
            return Admission(allowed=True)
        return Admission(
            allowed=False,
            warn=bool(int(warn)),
            limited_by=keys[int(first) - 1] if int(first) else None,
            retry_after_s=float(wait.decode() if isinstance(wait, bytes) else wait),
        )

    async def aclose(self) -> None:
        await self._client.aclose()
