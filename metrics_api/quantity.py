"""Kubernetes quantities for metric values, in KEDA's milli precision."""

from __future__ import annotations

import math


def milli_quantity(value: float) -> str:
    """`5` → "5", `1.5` → "1500m", `0.0004` → "0"; NaN, ±Inf and negatives become "0" (KEDA)."""
    if math.isnan(value) or math.isinf(value) or value <= 0:
        return "0"
    milli = int(value * 1000)
    if milli % 1000 == 0:
        return str(milli // 1000)
    return f"{milli}m"
