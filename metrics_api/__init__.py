"""external.metrics.k8s.io server: reads the store, never a broker."""
