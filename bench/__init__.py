"""Benchmarks for Tahoe Auth (Envoy + wrk harness in ``bench.harness``)."""
