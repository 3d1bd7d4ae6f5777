"""HTTP scale-from-zero: the interceptor (`tidal intercept`) and the daemon-side `http` trigger.

* `routes`: HTTPScaledObjects (``http.keda.sh/v1alpha1``) as a host + path-prefix route table.
* `backends`: the ready addresses of a Service, from EndpointSlices and/or ready Pods.
* `stats`: per-target in-flight and arrival counts, pushed to every daemon stream at once.
* `proxy` / `server`: the aiohttp proxy that holds requests while a workload wakes.
* `feed` / `scaler`: the daemon side: the pushes of every interceptor replica, summed per target.

See docs/http.md.
"""
