"""JSON text that strict parsers accept: a float that is not finite (an undefined
estimate, 0 / 0) is written as ``null``, never as the ``NaN`` or ``Infinity`` that
Python's :mod:`json` emits by default and ``jq``, browsers and most languages refuse."""

from __future__ import annotations

import json
import math
from typing import Any


def finite(obj: Any) -> Any:
    """``obj`` with every non-finite float, however deeply nested, replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """:func:`json.dumps` of :func:`finite` ``obj``; ``allow_nan=False`` guards the rest
    (a numpy float's ``default=str`` goes through as text)."""
    return json.dumps(finite(obj), allow_nan=False, **kwargs)
