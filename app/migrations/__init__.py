"""The job database's schema: Alembic migrations (``versions/``) and :mod:`migrate`, which
applies them from code and from ``jobstack db upgrade``.

Every model change in ``app.models`` comes with a migration here; a test compares the two
on both databases (tests/integration/test_migrations.py).
"""
