"""Ingestion of uploaded Splunk configuration archives: safe extraction and parsing.

The path of an upload: ``runs`` stores it and queues ``ingest.parse_run``; the job
extracts it with ``archive`` (the format by its first bytes; ``untar`` or ``unzip``,
both held to ``rules``: limits counted on every byte decompressed, safe member names),
parses each .conf with ``conf_parser`` (bounded lines and stanzas), merges the stanzas
on disk with ``merging`` and stores them in batches in the transaction that completes
the run (``runs``).
"""
