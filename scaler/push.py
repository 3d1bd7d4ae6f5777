"""Push wake-ups: one task per push-capable trigger wakes its object's poll at once.

A wake-up is only a hint: the object's next poll samples the source and decides (safety rule 1
still holds). The subscription is retried with jittered backoff while the object keeps polling;
a source that cannot push (Redis keyspace notifications off) is looked at again every
`recheck` seconds, so turning push on later needs no edit of the object.

A `wakeups()` iterator yields once as soon as its subscription is in place, then once per hint
(see `scaler.contract`). The first item is "subscribed": only then does
`tidal_push_subscription_up` go to 1 (so an event sent once it reads 1 is never missed), and it
wakes the object too: events that arrived between the object's last poll and the
(re)subscription are caught by that one poll instead of the next `pollingInterval`.
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
PUSH_ANNOTATION = "autoscaling.tidal.sh/push"  # "false": poll only, never subscribe


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
        # The wait happens outside the except blocks: waiting inside one would keep the
        # exception, its traceback and their frames alive for the whole (minutes-long) wait.
        delay: float
        try:
            subscribed = False
            async for _ in trig.scaler.wakeups():  # type: ignore[union-attr]
                if not subscribed:  # the first item: the subscription is in place
                    subscribed = True
                    up.set(1)
                    backoff.reset()
                    if down or unsupported:
                        down = unsupported = False
                        log.info(
                            "push subscription restored",
                            extra={"object": f"{ns}/{name}", "trigger": trig.spec.name},
                        )
                # Every item wakes the object, the first included: its poll catches what
                # happened while there was no subscription.
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
            delay = recheck
        except (ScalerError, ConfigError) as exc:
            up.set(0)
            if not down:
                down = True
                log.warning(
                    "push subscription down; polling",
                    extra={"object": f"{ns}/{name}", "trigger": trig.spec.name, "error": str(exc)},
                )
            delay = backoff.next_delay()
        except Exception:
            up.set(0)
            log.exception(
                "push subscription failed; polling",
                extra={"object": f"{ns}/{name}", "trigger": trig.spec.name},
            )
            delay = backoff.next_delay()
        await asyncio.sleep(delay)
