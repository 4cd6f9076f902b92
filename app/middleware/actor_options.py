"""Declares the actor options jobstack reads, so Dramatiq accepts them on actors."""

from __future__ import annotations

from dramatiq.middleware import Middleware


class JobstackActorOptions(Middleware):
    """``public=True`` lets the REST API submit the actor; ``schema`` validates its kwargs."""

    @property
    def actor_options(self) -> set[str]:
        return {"public", "schema"}
