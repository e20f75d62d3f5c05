"""Joining feedback events to the decisions they answer."""

from __future__ import annotations

import polars as pl

INTERACTION_COLUMNS = ("event_id", "request_id", "user_id", "query", "entity_id", "type",
                       "weight", "position", "timestamp")


def interactions(events: pl.DataFrame, decisions: pl.DataFrame,
                 weights: dict[str, float]) -> pl.DataFrame:
    """Events with the query text and user of their decision, and the type's weight.

    An event's own ``query``/``user_id`` win over the decision's (events from other
    systems may carry them); events whose request is unknown keep their own values.
    """
    dec = decisions.select(pl.col("request_id"), pl.col("query").alias("_query"),
                           pl.col("user_id").alias("_user"))
    joined = events.join(dec, on="request_id", how="left")
    weight_map = pl.DataFrame({"type": list(weights), "weight": list(weights.values())},
                              schema={"type": pl.String, "weight": pl.Float64})
    return (joined
            .with_columns(pl.coalesce("query", "_query").alias("query"),
                          pl.coalesce("user_id", "_user").alias("user_id"))
            .join(weight_map, on="type", how="left")
            .select(INTERACTION_COLUMNS))
