"""Tidal's benchmarks: each module produces JSON results and rows for the README table."""
