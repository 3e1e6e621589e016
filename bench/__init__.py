"""Benchmarks of the connector against its physical limits (``python -m bench.run``)."""
