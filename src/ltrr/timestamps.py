"""Timestamps as events and contexts carry them: epoch seconds or ISO 8601 strings.

The one home of the timestamp rule, applied to events files, the HTTP API and the
events learners read from the log: a timestamp is a finite number of seconds since
the epoch, not before 1970-01-01 (``MIN_TIMESTAMP``), not after 9999-12-31
(``MAX_TIMESTAMP``, the last second a ``datetime`` can show) and, for events, at most
``max_future`` seconds ahead of the receiver's clock (the spec's
``feedback.max_future_s``, default one day). One event stamped NaN, infinity or years
ahead would otherwise set a learner's "now" and decay everything else to nothing.
"""

from __future__ import annotations

import math
import time
from datetime import datetime

MIN_TIMESTAMP = 0.0                  # 1970-01-01T00:00:00Z
MAX_TIMESTAMP = 253402300799.0       # 9999-12-31T23:59:59Z
DEFAULT_MAX_FUTURE_S = 86400.0       # events may be stamped up to a day ahead (clock skew)


def parse_timestamp(value) -> float | None:
    """Epoch seconds from a number or an ISO 8601 string (``Z`` allowed); None if neither.

    Numbers too large for a float (``10**400``) are ±infinity, which :func:`problem`
    refuses; an ISO date whose epoch seconds overflow is None.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except (ValueError, OverflowError):
            return None
    return None


def problem(ts: float, now: float | None = None,
            max_future: float | None = DEFAULT_MAX_FUTURE_S) -> str | None:
    """Why epoch seconds ``ts`` are not a valid time (None when they are).

    ``max_future`` None checks only the range (context timestamps: a time feature);
    otherwise ``ts`` may be at most that many seconds after ``now`` (default: the clock).
    """
    if not math.isfinite(ts):
        return "is not a finite number"
    if ts < MIN_TIMESTAMP:
        return "is before 1970-01-01 (epoch seconds must be >= 0)"
    if ts > MAX_TIMESTAMP:
        return "is after the year 9999: too far in the future"
    if max_future is not None:
        now = time.time() if now is None else now
        if ts > now + max_future:
            return (f"is {_duration(ts - now)} in the future, more than the "
                    f"{_duration(max_future)} allowed (feedback.max_future_s)")
    return None


def check_timestamp(value, now: float | None = None,
                    max_future: float | None = DEFAULT_MAX_FUTURE_S) -> float:
    """Epoch seconds of ``value`` (a number or ISO 8601), or ValueError saying why not."""
    ts = parse_timestamp(value)
    if ts is None:
        raise ValueError(f"timestamp {_shown(value)} is neither epoch seconds nor ISO 8601")
    why = problem(ts, now, max_future)
    if why is not None and isinstance(value, int) and math.isinf(ts):
        why = "is too large: not a finite number of seconds"
    if why is not None:
        raise ValueError(f"timestamp {_shown(value)} {why}")
    return ts


def valid_expr(column: str = "timestamp", now: float | None = None,
               max_future: float | None = DEFAULT_MAX_FUTURE_S):
    """A polars expression: True where ``column`` (Float64 epoch seconds) is a valid
    time, null where it is null — the vectorised form of :func:`problem`."""
    import polars as pl

    high = MAX_TIMESTAMP
    if max_future is not None:
        high = min(high, (time.time() if now is None else now) + max_future)
    col = pl.col(column)
    return col.is_finite() & (col >= MIN_TIMESTAMP) & (col <= high)


def _shown(value) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10 ** 30:
        return f"of about {int(value.bit_length() * 0.30103) + 1} digits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _duration(seconds: float) -> str:
    for unit, size in (("years", 365 * 86400.0), ("days", 86400.0), ("hours", 3600.0),
                       ("minutes", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} seconds"
