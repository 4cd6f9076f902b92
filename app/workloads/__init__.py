"""The workloads jobstack ships, built on its core like any user's actors would be.

:mod:`ingest` extracts and parses uploaded Splunk configuration archives; :mod:`datasets`
loads baby-name dataset files; :mod:`health` is the periodic health check; :mod:`uploads`
stores an uploaded file and queues the job that processes it, in one transaction. The
actors that run them are in the top-level ``actors`` package.
"""
