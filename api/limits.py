"""What a request may carry, so that crafted input is a 4xx naming the problem, not a 500.

Numbers and moments that reach SQL must fit their column on every backend; JSON bodies
must be shallow enough to parse, validate and serialise without hitting Python's
recursion limit, and hold only numbers a JSON column can store.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from flask import request
from flask_smorest import abort
from marshmallow import ValidationError
from sqlalchemy import BigInteger, SmallInteger
from sqlalchemy.types import TypeEngine

#: Deepest nesting of objects and arrays a JSON body may have. Job kwargs rarely go past
#: a handful of levels; each level costs stack frames in the parser, marshmallow and
#: every later ``json.dumps``, and Python stops at 1,000 frames.
MAX_JSON_DEPTH = 32

#: Moments the API accepts (from, until exclusive): within them, converting to UTC or any
#: other offset stays inside ``datetime``'s range of years 1 to 9999.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)
MOMENT_RANGE = "must be from 1970 to 9998 (UTC)"

#: In job listings, a value longer than this many characters (args, kwargs and result
#: measured as their stored JSON) is left out and named in the item's ``truncated``;
#: ``GET /v1/jobs/{id}`` returns it whole.
LISTED_VALUE_MAX_CHARS = 4096


def largest_integer(column_type: TypeEngine[Any]) -> int:
    """The largest value an integer column holds on every backend (PostgreSQL's INTEGER
    is 32-bit; SQLite's is always 64-bit)."""
    if isinstance(column_type, BigInteger):
        return 2**63 - 1
    if isinstance(column_type, SmallInteger):
        return 2**15 - 1
    return 2**31 - 1


def in_moment_range(moment: datetime) -> bool:
    """Whether an aware ``moment`` is one the API accepts (comparing aware datetimes
    never overflows, unlike converting them)."""
    return EARLIEST <= moment < LATEST


def check_moment(moment: datetime) -> None:
    """The marshmallow validator of every datetime field of a request."""
    if not in_moment_range(moment):
        raise ValidationError(MOMENT_RANGE)


class _Unreadable(ValueError):
    """A JSON body no view could take; the message says why."""


def _refuse_constant(name: str) -> Any:
    raise _Unreadable(f"the JSON body holds {name}, which JSON does not allow")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # 1e999 parses to infinity
        _refuse_constant(text)
    return number


def _depth(value: Any) -> int:
    """How deeply objects and arrays nest in ``value`` (without recursing)."""
    deepest = 0
    pending = [(value, 1)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_JSON_DEPTH:
            break
        pending.extend((child, level + 1) for child in children)
    return deepest


def refuse_unreadable_json() -> None:
    """400 for a JSON body nested deeper than :data:`MAX_JSON_DEPTH`, or holding NaN,
    Infinity or a number too long to read.

    The views' parsers (webargs, ``request.get_json``) use ``json.loads`` as it is: a
    RecursionError or an unreadable number is a 500 there, and NaN reaches the database,
    whose JSON columns refuse it. Malformed JSON is left to them (400 as before).
    """
    if not request.is_json:
        return
    body = request.get_data(cache=True)
    if not body:
        return
    too_deep = f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels"
    try:
        value = json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        abort(400, message=too_deep)
    except _Unreadable as error:
        abort(400, message=str(error))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return
    except ValueError:  # only int() raises others: past Python's 4,300 digits
        abort(400, message="the JSON body holds a number too long to read")
    if _depth(value) > MAX_JSON_DEPTH:
        abort(400, message=too_deep)
