"""Ingestion of uploaded Splunk configuration archives: safe extraction and parsing."""
