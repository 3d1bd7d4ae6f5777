"""Tidal's daemon core."""
