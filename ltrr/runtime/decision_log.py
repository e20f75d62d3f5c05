"""Durable, append-only decision log: one Parquet part per answered batch.

Read it with ``polars.scan_parquet(<state_dir>/decisions/*.parquet)`` or DuckDB.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from ltrr.parquet_log import ParquetLog
from ltrr.types import Decision

_CANDIDATE = pl.Struct({"entity_id": pl.String, "arm": pl.String, "rank": pl.Int32,
                        "score": pl.Float64, "seed": pl.String,
                        "features": pl.String})      # JSON object, or null
SCHEMA = pl.Schema({
    "request_id": pl.String,
    "timestamp": pl.Float64,
    "spec_hash": pl.String,
    "query": pl.String,
    "user_id": pl.String,
    "context": pl.String,                       # JSON
    "slots": pl.List(pl.Struct({"name": pl.String, "value": pl.String, "start": pl.Int32,
                                "end": pl.Int32, "score": pl.Float64,
                                "entity_id": pl.String})),
    "allocation": pl.List(pl.Struct({"arm": pl.String, "k": pl.Int32})),
    "action_index": pl.Int32,
    "probability": pl.Float64,
    "pmf": pl.String,                           # JSON [[allocation, p], ...]
    "action_features": pl.String,               # JSON: the policy's context features
    "candidates": pl.List(_CANDIDATE),
    "ranking": pl.List(pl.Struct({"rank": pl.Int32, "entity_id": pl.String,
                                  "score": pl.Float64, "arms": pl.List(pl.String)})),
    "timings_ms": pl.String,                    # JSON
    "trace": pl.List(pl.String),
})


def decision_row(d: Decision) -> dict:
    """A decision as one flat log row (nested lists of structs for candidates)."""
    return {
        "request_id": d.request_id, "timestamp": d.timestamp, "spec_hash": d.spec_hash,
        "query": d.query.text, "user_id": d.query.user_id,
        "context": json.dumps(d.query.context, default=str),
        "slots": [{"name": s.name, "value": s.value, "start": s.start, "end": s.end,
                   "score": s.score, "entity_id": s.entity_id} for s in d.slots],
        "allocation": [{"arm": a, "k": k} for a, k in d.action.allocation.items()],
        "action_index": d.action.index, "probability": d.action.probability,
        "pmf": json.dumps(d.action.pmf),
        "action_features": json.dumps(d.action.features) if d.action.features else None,
        "candidates": [{"entity_id": c.entity_id, "arm": c.arm, "rank": c.rank,
                        "score": c.score, "seed": c.seed,
                        "features": json.dumps(c.features) if c.features else None}
                       for cands in d.candidates.values() for c in cands],
        "ranking": [{"rank": r.rank, "entity_id": r.entity_id, "score": r.score,
                     "arms": [c.arm for c in r.sources]} for r in d.ranking],
        "timings_ms": json.dumps(d.timings_ms),
        "trace": d.trace,
    }


class DecisionLog(ParquetLog):
    """Appends decisions under ``directory`` as immutable Parquet parts."""

    def __init__(self, directory: Path):
        super().__init__(directory, SCHEMA)

    def append(self, decisions: list[Decision]) -> Path | None:
        """Log a batch of decisions as one part."""
        if not decisions:
            return None
        return self.append_frame(pl.DataFrame([decision_row(d) for d in decisions],
                                              schema=SCHEMA))
