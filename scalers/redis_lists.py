"""The `redis`, `redis-cluster` and `redis-sentinel` triggers: the length of a Redis key.

KEDA semantics: the value is LLEN for a list (or a missing key), ZCARD for a sorted set, SCARD
for a set, HLEN for a hash; any other type is an error. Active when the length is strictly
greater than ``activationListLength``. The read is one EVALSHA (see `redis_reads`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import ClassVar

from scaler.clients import ClientPool
from scaler.contract import MetricSpec, Sample, TriggerContext, metric_name
from scaler.params import Config, Param
from scalers.redis_common import CONNECTION_PARAMS
from scalers.redis_push import key_wakeups
from scalers.redis_reads import LuaScript, RedisScaler, as_count

LENGTH_SCRIPT = LuaScript(
    """
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'list' or kind == 'none' then
  return redis.call('LLEN', KEYS[1])
elseif kind == 'zset' then
  return redis.call('ZCARD', KEYS[1])
elseif kind == 'set' then
  return redis.call('SCARD', KEYS[1])
elseif kind == 'hash' then
  return redis.call('HLEN', KEYS[1])
end
return redis.error_reply('key has unsupported type ' .. kind ..
  ' (expected list, set, sorted set or hash)')
"""
)


class RedisListScaler(RedisScaler):
    PARAMS: ClassVar[tuple[Param, ...]] = (
        Param("listName", required=True),
        Param("listLength", "int", default=5, above=0, doc="HPA target (AverageValue)"),
        Param("activationListLength", "int", default=0, minimum=0),
        *CONNECTION_PARAMS,
    )
    SAMPLED = True

    def __init__(self, config: Config, trigger: TriggerContext, clients: ClientPool) -> None:
        self._key = config.get_str("listName")
        self._activation = config.get_int("activationListLength")
        spec = MetricSpec(
            metric_name(trigger.index, f"redis-{self._key}"),
            float(config.get_int("listLength")),
            trigger.metric_type,
        )
        super().__init__(spec, config, trigger, clients)

    async def sample(self, now: float) -> Sample:
        length = as_count(await self._conn.run(LENGTH_SCRIPT, [self._key]), "list length")
        return Sample(float(length), length > self._activation, now)

    def wakeups(self) -> AsyncIterator[None]:
        """Keyspace notifications for the key (see scalers.redis_push): a hint, never a value."""
        return key_wakeups(self._conn.target, self._key, self._clients, "l")
