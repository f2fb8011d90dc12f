"""Shared state: in-process memory by default, Redis when ``redis_url`` is set."""
