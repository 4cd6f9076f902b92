"""Declares the actor options jobstack reads, so Dramatiq accepts them on actors."""

from __future__ import annotations

from dramatiq.middleware import Middleware


class JobstackActorOptions(Middleware):
    """``public=True`` lets the REST API submit the actor; ``schema`` validates its kwargs;
    ``unique_for`` (seconds) and ``unique_key`` make its jobs unique (app.uniqueness)."""

    @property
    def actor_options(self) -> set[str]:
        return {"public", "schema", "unique_for", "unique_key"}
