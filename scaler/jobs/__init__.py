"""ScaledJob (keda.sh/v1alpha1): Jobs created per event, with KEDA's semantics.

spec (the parsed object), decide (pure: how many Jobs), render (pure: the Job body and the
status), writer (every write: Jobs, ScaledJob status, Events) and controller (watches, the poll
loop, wiring). See docs/scaledjob.md.
"""
