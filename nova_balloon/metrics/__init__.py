"""Prometheus metrics of the agent: ``values`` (pure) and ``exporter`` (prometheus-client)."""
