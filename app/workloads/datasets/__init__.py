"""Baby-name datasets: parsers per country, and loading records in batches."""
