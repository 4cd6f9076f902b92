"""jobstack's Dramatiq middleware, one behaviour per module."""
