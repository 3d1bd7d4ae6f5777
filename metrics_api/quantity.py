"""Kubernetes quantities for metric values: the one implementation lives in `scaler.values`."""

from __future__ import annotations

from scaler.values import milli_quantity

__all__ = ["milli_quantity"]
