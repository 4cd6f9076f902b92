"""The optional bearer token of ``/metrics`` (JOBSTACK_METRICS_TOKEN), for the API and the
workers' metrics server alike."""

from __future__ import annotations

import hmac


def allowed(authorization: str | None, token: str) -> bool:
    """Whether a request with this ``Authorization`` header may read the metrics: any
    request when no token is set, else only ``Bearer <token>``."""
    if not token:
        return True
    scheme, _, presented = (authorization or "").partition(" ")
    # Compared in constant time: a token compared byte by byte leaks its prefix.
    return scheme.lower() == "bearer" and hmac.compare_digest(
        presented.strip().encode(), token.encode()
    )
