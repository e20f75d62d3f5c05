"""Durable, append-only decision log: one Parquet part per answered batch.

Read it with ``polars.scan_parquet(<state_dir>/decisions/*.parquet)`` or DuckDB.
"""

from __future__ import annotations

from pathlib import Path

from typing import TYPE_CHECKING

import orjson
import polars as pl

from ltrr.parquet_log import ParquetLog
from ltrr.types import Decision

if TYPE_CHECKING:
    import pyarrow as pa

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


def _nested(lists: list[list[tuple]], fields: dict[str, "pa.DataType"]) -> "pa.ListArray":
    """A list-of-struct column from one list of tuples per row (tuple order = fields)."""
    import pyarrow as pa

    offsets = [0]
    for items in lists:
        offsets.append(offsets[-1] + len(items))
    flat = [x for items in lists for x in items]
    columns = list(zip(*flat)) if flat else [()] * len(fields)
    struct = pa.StructArray.from_arrays(
        [pa.array(col, type=t) for col, t in zip(columns, fields.values())],
        names=list(fields))
    return pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), struct)


_SLOT_FIELDS = {"name": "string", "value": "string", "start": "int32", "end": "int32",
                "score": "float64", "entity_id": "string"}
_ALLOCATION_FIELDS = {"arm": "string", "k": "int32"}
_CANDIDATE_FIELDS = {"entity_id": "string", "arm": "string", "rank": "int32",
                     "score": "float64", "seed": "string", "features": "string"}


def _dumps(obj) -> str:
    """Compact JSON (orjson: a tenth of ``json.dumps``'s time, which the candidates'
    feature dicts made 5% of a serving worker's); other values as their ``str``."""
    return orjson.dumps(obj, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def decision_frame(decisions: list[Decision]) -> pl.DataFrame:
    """Decisions as log rows (:data:`SCHEMA`), built column by column: the nested
    columns go through Arrow arrays, not one Python dict per candidate."""
    import pyarrow as pa

    def types(fields: dict[str, str]) -> dict[str, pa.DataType]:
        return {k: getattr(pa, t)() for k, t in fields.items()}

    ds = decisions
    dumps = _dumps
    nested = {
        "slots": _nested([[(s.name, s.value, s.start, s.end, s.score, s.entity_id)
                           for s in d.slots] for d in ds], types(_SLOT_FIELDS)),
        "allocation": _nested([list(d.action.allocation.items()) for d in ds],
                              types(_ALLOCATION_FIELDS)),
        "candidates": _nested([[(c.entity_id, c.arm, c.rank, c.score, c.seed,
                                 dumps(c.features) if c.features else None)
                                for cands in d.candidates.values() for c in cands]
                               for d in ds], types(_CANDIDATE_FIELDS)),
        "ranking": _nested([[(r.rank, r.entity_id, r.score, [c.arm for c in r.sources])
                             for r in d.ranking] for d in ds],
                           {"rank": pa.int32(), "entity_id": pa.string(),
                            "score": pa.float64(), "arms": pa.list_(pa.string())}),
    }
    columns = {
        "request_id": [d.request_id for d in ds], "timestamp": [d.timestamp for d in ds],
        "spec_hash": [d.spec_hash for d in ds], "query": [d.query.text for d in ds],
        "user_id": [d.query.user_id for d in ds],
        "context": [dumps(d.query.context) for d in ds],
        "slots": None, "allocation": None,
        "action_index": [d.action.index for d in ds],
        "probability": [d.action.probability for d in ds],
        "pmf": [dumps(d.action.pmf) for d in ds],
        "action_features": [dumps(d.action.features) if d.action.features else None
                            for d in ds],
        "candidates": None, "ranking": None,
        "timings_ms": [dumps(d.timings_ms) for d in ds], "trace": [d.trace for d in ds],
    }
    series = [pl.from_arrow(nested[name]).alias(name) if values is None
              else pl.Series(name, values, dtype=SCHEMA[name])
              for name, values in columns.items()]
    return pl.DataFrame(series).cast(SCHEMA)


class DecisionLog(ParquetLog):
    """Appends decisions under ``directory`` as immutable Parquet parts."""

    def __init__(self, directory: Path):
        super().__init__(directory, SCHEMA)

    def append(self, decisions: list[Decision]) -> Path | None:
        """Log a batch of decisions as one part."""
        if not decisions:
            return None
        return self.append_frame(decision_frame(decisions))
