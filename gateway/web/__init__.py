"""Local status page, JSON API and /metrics. Reads state; never sits on the hot path."""
