"""The `redis-streams` triggers (plain, cluster, sentinel): a Redis stream's backlog.

Modes, as KEDA's: no ``consumerGroup`` -> XLEN, target ``streamLength``; ``consumerGroup``
without ``lagCount`` -> the group's pending entries (XPENDING), target ``pendingEntriesCount``;
``consumerGroup`` with ``lagCount`` -> the group's lag from XINFO GROUPS (Redis 7+), target
``lagCount``. In lag mode a missing stream reads 0 and a missing group reads the stream length.
When Redis cannot compute the lag (it reports nil, e.g. after XDEL in the unread range) the
stream length is used: an upper bound, never a made-up 0. Active when the value is strictly
greater than ``activationLagCount``. Every read is one EVALSHA.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from scaler.clients import ClientPool
from scaler.contract import MetricSpec, Sample, TriggerContext, metric_name
from scaler.params import Config, Param
from scalers.redis_common import CONNECTION_PARAMS
from scalers.redis_reads import LuaScript, RedisScaler, as_count

Mode = Literal["xlen", "pending", "lag"]

STREAM_SCRIPT = LuaScript(
    """
local key, mode, group = KEYS[1], ARGV[1], ARGV[2]
if mode == 'xlen' then
  return redis.call('XLEN', key)
end
if mode == 'pending' then
  return redis.call('XPENDING', key, group)[1]
end
if redis.call('EXISTS', key) == 0 then
  return 0
end
for _, info in ipairs(redis.call('XINFO', 'GROUPS', key)) do
  local name, lag, has_lag = nil, nil, false
  for i = 1, #info, 2 do
    if info[i] == 'name' then
      name = info[i + 1]
    elseif info[i] == 'lag' then
      lag, has_lag = info[i + 1], true
    end
  end
  if name == group then
    if not has_lag then
      return redis.error_reply('lag mode needs Redis 7 or newer (XINFO GROUPS has no lag)')
    end
    if not lag then
      return redis.call('XLEN', key)
    end
    return lag
  end
end
return redis.call('XLEN', key)
"""
)


class RedisStreamsScaler(RedisScaler):
    PARAMS: ClassVar[tuple[Param, ...]] = (
        Param("stream", required=True),
        Param("consumerGroup"),
        Param("pendingEntriesCount", "int", default=5, above=0),
        Param("streamLength", "int", default=5, above=0),
        Param("lagCount", "int", above=0),
        Param("activationLagCount", "int", default=0, minimum=0),
        *CONNECTION_PARAMS,
    )
    SAMPLED = True

    def __init__(self, config: Config, trigger: TriggerContext, clients: ClientPool) -> None:
        self._stream = config.get_str("stream")
        self._group = config.opt_str("consumerGroup") or ""
        lag = config.opt_int("lagCount")
        self.mode: Mode
        if not self._group:
            self.mode, target = "xlen", config.get_int("streamLength")
        elif lag is None:
            self.mode, target = "pending", config.get_int("pendingEntriesCount")
        else:
            self.mode, target = "lag", lag
        self._activation = config.get_int("activationLagCount")
        spec = MetricSpec(
            metric_name(trigger.index, f"redis-streams-{self._stream}"),
            float(target),
            trigger.metric_type,
        )
        super().__init__(spec, config, trigger, clients)

    async def sample(self, now: float) -> Sample:
        answer = await self._conn.run(STREAM_SCRIPT, [self._stream], [self.mode, self._group])
        value = as_count(answer, f"stream {self.mode}")
        return Sample(float(value), value > self._activation, now)
