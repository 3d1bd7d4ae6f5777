"""Push wake-ups: one task per push-capable trigger wakes its object's poll at once.

A wake-up is only a hint: the object's next poll samples the source and decides (safety rule 1
still holds). The subscription is retried with jittered backoff while the object keeps polling;
a source that cannot push (Redis keyspace notifications off) is looked at again every
`recheck` seconds, so turning push on later needs no edit of the object.
`tidal_push_subscription_up` says whether the object currently has a subscription.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from scaler.errors import ConfigError, ScalerError, UnsupportedError
from scaler.kube.watch import Backoff
from scaler.runtime import TriggerRuntime
from scaler.telemetry import Telemetry

log = logging.getLogger(__name__)

Key = tuple[str, str]


async def push_loop(
    key: Key,
    trig: TriggerRuntime,
    *,
    wake: Callable[[Key], None],
    telemetry: Telemetry,
    recheck: float,
) -> None:
    """Wake the object `key` whenever the trigger's source hints at a change; runs until
    cancelled."""
    ns, name = key
    up = telemetry.push_connected.labels(ns, name, str(trig.trigger.index))
    backoff = Backoff(base=1.0, cap=30.0)
    down = False
    unsupported = False
    while True:
        try:
            wakeups = trig.scaler.wakeups()  # type: ignore[union-attr]
            up.set(1)
            async for _ in wakeups:
                if down or unsupported:
                    down = unsupported = False
                    log.info(
                        "push subscription restored",
                        extra={"object": f"{ns}/{name}", "trigger": trig.spec.name},
                    )
                backoff.reset()
                wake(key)
            raise ScalerError("push subscription ended")
        except asyncio.CancelledError:
            up.set(0)
            raise
        except UnsupportedError as exc:
            up.set(0)
            if not unsupported:
                unsupported = True
                log.info(
                    "push not available; polling",
                    extra={
                        "object": f"{ns}/{name}",
                        "trigger": trig.spec.name,
                        "reason": str(exc),
                        "recheck_s": recheck,
                    },
                )
            await asyncio.sleep(recheck)
            continue
        except (ScalerError, ConfigError) as exc:
            up.set(0)
            if not down:
                down = True
                log.warning(
                    "push subscription down; polling",
                    extra={"object": f"{ns}/{name}", "trigger": trig.spec.name, "error": str(exc)},
                )
        except Exception:
            up.set(0)
            log.exception(
                "push subscription failed; polling",
                extra={"object": f"{ns}/{name}", "trigger": trig.spec.name},
            )
        await asyncio.sleep(backoff.next_delay())
