"""Benchmarks comparing jobstack with bare Dramatiq in one run (``make bench``)."""
