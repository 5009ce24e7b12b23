"""Helpers shared by the tests (and the readiness poll shared with benchmarks/serve.py)."""
