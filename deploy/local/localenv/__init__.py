"""Tidal's local environment: real components as processes on 127.0.0.1.

Used by the pytest fixtures (tests/conftest.py), `make demo` and the benchmarks, so all three
start components the same way. Synchronous on purpose: it starts processes and polls readiness.
"""
