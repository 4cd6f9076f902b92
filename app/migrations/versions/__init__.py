"""Migration scripts, applied in order by ``jobstack db upgrade``."""
