"""Benchmarks for Tahoe Auth (they share the Envoy + wrk harness of the tests: ``tests.harness``)."""
