"""All of jobstack's actors. ``dramatiq actors`` and ``periodiq actors`` load this package.

``app.broker`` is imported first so that every actor binds to jobstack's broker and
middleware (Dramatiq binds an actor to the broker that exists when it is declared).
"""

import app.broker  # noqa: F401  (must precede the actor modules)
from actors import datasets, diagnostics, ingest, maintenance, webhooks

__all__ = ["datasets", "diagnostics", "ingest", "maintenance", "webhooks"]
