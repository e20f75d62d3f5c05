"""Timestamps as events and contexts carry them: epoch seconds or ISO 8601 strings."""

from __future__ import annotations

from datetime import datetime


def parse_timestamp(value) -> float | None:
    """Epoch seconds from a number or an ISO 8601 string (``Z`` allowed); None if neither."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None
