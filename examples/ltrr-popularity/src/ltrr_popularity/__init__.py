"""ltrr-popularity: a third-party ltrr plugin providing the ``popularity`` ranker.

ltrr finds this module through the entry point ``popularity = "ltrr_popularity"`` in
the group ``ltrr`` and registers the hook implementations below.
"""

from __future__ import annotations

from ltrr.hookspecs import hookimpl

from ltrr_popularity.ranker import PopularityParams, PopularityRanker

__all__ = ["PopularityParams", "PopularityRanker", "ltrr_components"]
__version__ = "0.1.0"


@hookimpl
def ltrr_components():
    """The components this plugin provides."""
    return [PopularityRanker]
