"""The server's policy for Python's cyclic garbage collector (the server owns it, not the
pipelines it serves: a process may hold several generations of a pipeline at once).

Everything loaded before serving (indexes, models, the web framework) lives as long as
the server, so it is moved out of the collector's scans (``gc.freeze``), which
otherwise cost large batches 2-4x and scan it all about once a second under load; young
collections run less often, because a search allocates thousands of short-lived
objects. A reload retires a pipeline: once it is closed, its objects are unfrozen and
collected, and what lives on is frozen again.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000    # allocations between young collections (Python's default: 700)


def settle() -> None:
    """Before serving: freeze what is loaded, and collect young objects less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def retired() -> None:
    """After a retired pipeline closed: collect it, then freeze what lives on again."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
