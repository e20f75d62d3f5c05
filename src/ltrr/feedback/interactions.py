"""Joining feedback events to the decisions they answer."""

from __future__ import annotations

import polars as pl

EVENT_COLUMNS = ("event_id", "request_id", "user_id", "query", "entity_id", "type", "weight",
                 "position", "timestamp")
DECISION_COLUMNS = ("in_candidates", "arms", "allocation", "probability", "action_index", "pmf",
                    "action_features", "timings_ms")
#: the engaged entity's type, from the catalog (null when the catalog is untyped or does
#: not hold the entity): events and the decision log do not store it
ENTITY_TYPE = "entity_type"
INTERACTION_COLUMNS = EVENT_COLUMNS + DECISION_COLUMNS + (ENTITY_TYPE,)


def require_columns(interactions: pl.DataFrame, needed: tuple[str, ...], node: str) -> None:
    """Raise a RunError naming ``node`` if ``interactions`` lacks any of ``needed``."""
    from ltrr.errors import RunError

    missing = [c for c in needed if c not in interactions.columns]
    if missing:
        raise RunError(f"interactions lack column(s) {', '.join(missing)}", node=node,
                       hint="pass the output of ltrr.feedback.interactions()")


def learn_from(learner, interactions: pl.DataFrame, decisions: pl.DataFrame):
    """Call ``learner.learn`` with the interactions, and with the decisions they answer
    when the learner asks for them (``learns_from_decisions``)."""
    if getattr(learner, "learns_from_decisions", False):
        return learner.learn(interactions, decisions=decisions)
    return learner.learn(interactions)


def interaction_frame(rows: list[dict]) -> pl.DataFrame:
    """An interactions frame from row dicts (learners' tests, simulators, benchmarks);
    columns a row leaves out are null."""
    frame = pl.DataFrame(rows) if rows else pl.DataFrame()
    missing = [c for c in INTERACTION_COLUMNS if c not in frame.columns]
    return frame.with_columns(pl.lit(None).alias(c) for c in missing).select(
        INTERACTION_COLUMNS)


def entity_types(plan, catalog=None) -> pl.DataFrame | None:
    """``entity_id`` → ``entity_type`` of a typed catalog (None when untyped): what
    :func:`interactions` joins to each event. ``catalog``: the plan's, already loaded
    (a workspace's); read from the spec otherwise."""
    if plan.model.catalog.types is None:
        return None
    if catalog is None:
        from ltrr.runtime.workspace import Workspace

        catalog = Workspace(plan).catalog
    return catalog.frame.select(pl.col(catalog.id_column).alias("entity_id"),
                                pl.col(catalog.type_column).cast(pl.String).alias(ENTITY_TYPE))


def interactions(events: pl.DataFrame, decisions: pl.DataFrame,
                 weights: dict[str, float], types: pl.DataFrame | None = None
                 ) -> pl.DataFrame:
    """Events with what is known of their decision, and the type's weight.

    Adds the decision's query and user (an event's own ``query``/``user_id`` win:
    events from other systems may carry them), ``in_candidates`` (the entity was in
    the decision's candidate set), ``arms`` (the arms that proposed it), and the
    policy's ``allocation`` / ``probability`` / ``action_index`` / ``pmf`` /
    ``action_features`` — everything a policy needs to learn from the event. Events
    whose request is unknown keep nulls there. ``types`` (:func:`entity_types`) adds
    the engaged entity's ``entity_type``; null without it.
    """
    cands = (decisions.select("request_id", "candidates").explode("candidates")
             .unnest("candidates")
             .group_by("request_id", "entity_id").agg(pl.col("arm").alias("arms")))
    dec = decisions.select(pl.col("request_id"), pl.col("query").alias("_query"),
                           pl.col("user_id").alias("_user"), "allocation", "probability",
                           "action_index", "pmf", "action_features", "timings_ms")
    weight_map = pl.DataFrame({"type": list(weights), "weight": list(weights.values())},
                              schema={"type": pl.String, "weight": pl.Float64})
    joined = events.join(dec, on="request_id", how="left")
    if types is not None:
        joined = joined.join(types, on="entity_id", how="left")
    else:
        joined = joined.with_columns(pl.lit(None, dtype=pl.String).alias(ENTITY_TYPE))
    return (joined
            .join(cands, on=["request_id", "entity_id"], how="left")
            .with_columns(pl.coalesce("query", "_query").alias("query"),
                          pl.coalesce("user_id", "_user").alias("user_id"),
                          pl.col("arms").is_not_null().alias("in_candidates"))
            .join(weight_map, on="type", how="left")
            .select(INTERACTION_COLUMNS))
