"""jobstack core: configuration, database, job state machine, broker and middleware."""
