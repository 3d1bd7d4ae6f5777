"""`tidal simulate`: a metric series through the daemon's `decide()` and a model of the HPA.

One job per module: `series` (CSV/JSON input), `prometheus` (query_range input), `objects`
(the ScaledObject and its triggers as the daemon reads them), `hpa_model` (the HPA controller),
`timeline` (the clock that runs both), `variants` (``--compare``), `render` (table and JSON),
`plot` (matplotlib, imported only for ``--plot``). Nothing here talks to Kubernetes.
"""
