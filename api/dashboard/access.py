"""Who may see and do what on the dashboard, checked before every page and action.

Pages redirect a visitor without a session to the sign-in form; fragments and streams
answer 401 (the page's script then sends the operator to sign in). Actions also need the
session's CSRF token and a scope that allows them: ``jobs:read`` sees, ``jobs:write``
acts on its tenant's jobs, ``admin`` sees and acts on everything, including dead letters,
workers and the audit log.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import quote

from flask import g, redirect, render_template, request

from api.dashboard.session import Operator, csrf_is_valid, current_operator

View = TypeVar("View", bound=Callable[..., Any])


def refusal(status: int, message: str) -> Any:
    """An HTML error page (the dashboard never answers its visitors with JSON)."""
    operator = g.get("operator")
    return render_template("error.html", status=status, message=message, op=operator), status


def operator() -> Operator:
    """The operator of the current request (set by the decorators below)."""
    found: Operator = g.operator
    return found


def _signed_in(*, page: bool) -> Operator | Any:
    found = current_operator()
    if found is None:
        if page:
            return redirect(f"/sign-in?next={quote(request.full_path.rstrip('?'), safe='')}")
        return refusal(401, "Your session has ended: sign in again.")
    g.operator = found
    return found


def viewer(*, admin: bool = False, page: bool = True) -> Callable[[View], View]:
    """A page (or, with ``page=False``, a fragment or stream) for signed-in operators;
    ``admin``: for admins only."""

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            found = _signed_in(page=page)
            if not isinstance(found, Operator):
                return found
            if not found.can_read:
                return refusal(403, "This token cannot read jobs (it lacks 'jobs:read').")
            if admin and not found.is_admin:
                return refusal(403, "This page is for admins (a token with the 'admin' scope).")
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def action(*, admin: bool = False) -> Callable[[View], View]:
    """A state-changing request: a session, its CSRF token, and a scope that may act."""

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            found = _signed_in(page=False)
            if not isinstance(found, Operator):
                return found
            if not csrf_is_valid(found):
                return refusal(403, "The form's CSRF token is missing or wrong: reload the page.")
            if not found.can_read or not found.can_act:
                return refusal(403, "This token may only read ('jobs:read'): it cannot act.")
            if admin and not found.is_admin:
                return refusal(403, "Only admins (the 'admin' scope) may do this.")
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
