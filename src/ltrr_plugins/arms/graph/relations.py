"""The relations a graph is built from (tables in any format ``ltrr.tables`` reads:
bipartite entity–attribute pairs, co-occurrence of entities in groups), read into
weighted edges."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, Union

from pydantic import Field

from ltrr.components import ColumnUse, Params, TableUse
from ltrr.errors import DataError, StateError
from ltrr.files import check_file
from ltrr.tables import column, list_values, read_table

if TYPE_CHECKING:
    import numpy as np
    import polars as pl

Transform = Literal["log1p", "raw", "binary"]
TableFormat = Literal["parquet", "csv", "tsv", "jsonl"]


class BipartiteRelation(Params):
    kind: Literal["bipartite"] = Field(description="Entity – attribute pairs.")
    path: str = Field(description=(
        "Table file (Parquet, CSV, TSV or JSONL; text ones may be gzipped), relative to "
        "the spec's folder."))
    format: TableFormat | None = Field(None, description=(
        "The file's format; inferred from its name when omitted."))
    entity: str = Field(description="Column holding catalog entity ids.")
    attribute: str = Field(description=(
        "Column holding attribute values (e.g. tags): one per row, or a list per row."))
    separator: str | None = Field(None, min_length=1, description=(
        "The attribute column holds text lists joined by this (e.g. '|'): split it."))
    namespace: str | None = Field(None, pattern=r"^[^:]+$", description=(
        "Prefix of the attribute nodes (`<namespace>:<value>`); default: the attribute "
        "column's name."))
    transform: Transform = Field("log1p", description=(
        "Edge weight from the number of rows per (entity, attribute) pair: log1p, raw "
        "(the count) or binary (1)."))
    min_entities: int = Field(2, ge=1, description=(
        "Drop attribute values linked to fewer catalog entities (they connect nothing)."))
    weight: float = Field(1.0, gt=0, description="Multiplier of this relation's edge weights.")


class CoOccurrenceRelation(Params):
    kind: Literal["co_occurrence"] = Field(description="Entities co-occurring in groups.")
    path: str = Field(description=(
        "Table file (Parquet, CSV, TSV or JSONL; text ones may be gzipped), relative to "
        "the spec's folder."))
    format: TableFormat | None = Field(None, description=(
        "The file's format; inferred from its name when omitted."))
    group: str = Field(description="Column holding the group (e.g. user_id).")
    entity: str = Field(description="Column holding catalog entity ids.")
    value: str | None = Field(None, description=(
        "Optional numeric column weighting an entity within its group (e.g. plays); "
        "absent: every row counts 1."))
    transform: Transform = Field("log1p", description=(
        "Applied to `value` before the cosine: log1p, raw or binary."))
    top_n: int = Field(20, ge=1, description=(
        "Neighbours kept per entity (by cosine of their group vectors)."))
    min_support: int = Field(1, ge=1, description=(
        "Ignore entity pairs that share fewer groups."))
    weight: float = Field(1.0, gt=0, description="Multiplier of this relation's edge weights.")


class LinkRelation(Params):
    kind: Literal["link"] = Field(description=(
        "Entities linked directly, row by row: e.g. a collection and its movies, a station "
        "and its artists — relations between entity types of a typed catalog."))
    path: str = Field(description=(
        "Table file (Parquet, CSV, TSV or JSONL; text ones may be gzipped), relative to "
        "the spec's folder."))
    format: TableFormat | None = Field(None, description=(
        "The file's format; inferred from its name when omitted."))
    source: str = Field(description="Column holding one end's catalog entity ids.")
    target: str = Field(description="Column holding the other end's catalog entity ids.")
    value: str | None = Field(None, description=(
        "Optional numeric column weighting a link (e.g. plays); absent: every row counts 1."))
    transform: Transform = Field("log1p", description=(
        "Edge weight from the summed `value` (or row count) of a pair: log1p, raw or binary."))
    weight: float = Field(1.0, gt=0, description="Multiplier of this relation's edge weights.")


Relation = Annotated[Union[BipartiteRelation, CoOccurrenceRelation, LinkRelation],
                     Field(discriminator="kind")]


def _namespace(rel: BipartiteRelation) -> str:
    return rel.namespace or rel.attribute


def relation_table(rel: "BipartiteRelation | CoOccurrenceRelation | LinkRelation", at: tuple
                   ) -> TableUse:
    """The file and columns a relation reads (``at``: where it sits in the params)."""
    if isinstance(rel, BipartiteRelation):
        columns = [ColumnUse(rel.entity, at + ("entity",), "scalar"),
                   ColumnUse(rel.attribute, at + ("attribute",), "text")]
    elif isinstance(rel, LinkRelation):
        columns = [ColumnUse(rel.source, at + ("source",), "scalar"),
                   ColumnUse(rel.target, at + ("target",), "scalar")]
        if rel.value:
            columns.append(ColumnUse(rel.value, at + ("value",), "number"))
    else:
        columns = [ColumnUse(rel.group, at + ("group",), "scalar"),
                   ColumnUse(rel.entity, at + ("entity",), "scalar")]
        if rel.value:
            columns.append(ColumnUse(rel.value, at + ("value",), "number"))
    return TableUse(tuple(columns), file=rel.path, path=at + ("path",),
                    what="relation file", format=rel.format)


def _weights(values: "np.ndarray", how: Transform) -> "np.ndarray":
    import numpy as np

    values = values.astype(np.float64)
    if how == "log1p":
        return np.log1p(np.maximum(values, 0.0))
    if how == "binary":
        return (values > 0).astype(np.float64)
    return values


class RelationReader:
    """Reads the arm's relation files into edges (a mixin of :class:`GraphArm`: uses its
    ``params`` and ``ctx``)."""

    def _relation_file(self, i: int, rel: "Relation") -> Path:
        """The relation's file, checked (a DataError naming the field)."""
        path = self.ctx.resolve(rel.path)
        check_file(path, "relation file", error=DataError, where=None, node=self.ctx.node_id,
                   field=f"with.relations.{i}.path",
                   hint="paths are relative to the spec's folder")
        return path

    def _read(self, i: int, rel, columns: list[tuple[str, str]]) -> "pl.DataFrame":
        """The relation's columns (param name, column), or an error naming the field."""
        frame = read_table(self._relation_file(i, rel), rel.format, what="relation file",
                           where=f"node '{self.ctx.node_id}' field 'with.relations.{i}.path'")
        for param, col in columns:
            column(frame, col, node=self.ctx.node_id, field=f"with.relations.{i}.{param}",
                   what=f"relation file {Path(rel.path).name}")
        return frame.select(list(dict.fromkeys(c for _, c in columns)))

    def _valued(self, i: int, rel: "CoOccurrenceRelation | LinkRelation",
                keys: list[tuple[str, str, str]]) -> "pl.DataFrame":
        """The relation's ``keys`` (param, column, alias) as text and its optional
        ``value`` as ``_v`` (1 when absent; a non-numeric column is an error naming the
        field), rows with a null dropped."""
        import polars as pl

        cols = [(param, col) for param, col, _ in keys]
        if rel.value:
            cols.append(("value", rel.value))
        df = self._read(i, rel, cols)
        if rel.value and not df.schema[rel.value].is_numeric():
            raise StateError(f"column '{rel.value}' is not numeric ({df.schema[rel.value]})",
                             node=self.ctx.node_id, field=f"with.relations.{i}.value",
                             hint="name a numeric column, or drop `value`")
        return df.select(*(pl.col(col).cast(pl.String).alias(alias) for _, col, alias in keys),
                         (pl.col(rel.value).cast(pl.Float64) if rel.value
                          else pl.lit(1.0)).alias("_v")).drop_nulls()

    def _bipartite(self, i: int, rel: BipartiteRelation, entities: "pl.DataFrame"):
        """(entity rows, attribute values, weights, rows dropped) of one bipartite relation."""
        import polars as pl

        df = self._read(i, rel, [("entity", rel.entity), ("attribute", rel.attribute)])
        if rel.separator is not None or df.schema[rel.attribute].is_nested():
            # a list per row: one row per value
            df = df.with_columns(list_values(rel.attribute, rel.separator)).explode(
                rel.attribute)
        df = df.select(pl.col(rel.entity).cast(pl.String).alias("_e"),
                       pl.col(rel.attribute).cast(pl.String).alias("_a")).drop_nulls()
        n_rows = df.height
        df = df.join(entities, on="_e", how="inner")
        dropped = n_rows - df.height
        pairs = df.group_by("_row", "_a").len("_n")
        keep = pairs.group_by("_a").len("_deg").filter(pl.col("_deg") >= rel.min_entities)
        pairs = pairs.join(keep.select("_a"), on="_a", how="semi").sort("_a", "_row")
        w = _weights(pairs["_n"].to_numpy(), rel.transform) * rel.weight
        return pairs["_row"].to_numpy(), pairs["_a"].to_list(), w, dropped

    def _link(self, i: int, rel: LinkRelation, entities: "pl.DataFrame"):
        """(u, v, weight, rows dropped) entity–entity edges, u < v, one per linked pair;
        a row naming an entity outside the catalog, or linking one to itself, is dropped."""
        import polars as pl

        df = self._valued(i, rel, [("source", rel.source, "_s"), ("target", rel.target, "_e")])
        n_rows = df.height
        df = (df.join(entities, on="_e", how="inner").rename({"_row": "_t", "_e": "_te"})
              .rename({"_s": "_e"}).join(entities, on="_e", how="inner")
              .filter(pl.col("_row") != pl.col("_t")))
        dropped = n_rows - df.height
        pairs = (df.select(pl.min_horizontal("_row", "_t").alias("u"),
                           pl.max_horizontal("_row", "_t").alias("v"), "_v")
                 .group_by("u", "v").agg(pl.col("_v").sum()).sort("u", "v"))
        w = _weights(pairs["_v"].to_numpy(), rel.transform) * rel.weight
        return pairs["u"].to_numpy(), pairs["v"].to_numpy(), w, dropped

    def _co_occurrence(self, i: int, rel: CoOccurrenceRelation, entities: "pl.DataFrame",
                       n: int):
        """(row, col, weight) entity–entity edges: each entity's top_n by cosine."""
        import numpy as np
        import polars as pl
        import scipy.sparse as sp

        df = self._valued(i, rel, [("group", rel.group, "_g"), ("entity", rel.entity, "_e")])
        n_rows = df.height
        df = df.join(entities, on="_e", how="inner")
        dropped = n_rows - df.height
        # sorted, with group codes by group name: the same input gives the same floats
        df = df.group_by("_row", "_g").agg(pl.col("_v").sum()).sort("_row", "_g")
        groups = (df["_g"].rank("dense") - 1).to_numpy().astype(np.int64)
        rows = df["_row"].to_numpy()
        vals = _weights(df["_v"].to_numpy(), rel.transform)
        n_groups = int(groups.max()) + 1 if len(groups) else 0
        x = sp.csr_matrix((vals, (rows, groups)), shape=(n, max(n_groups, 1)))
        x.eliminate_zeros()
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        xn = sp.diags(1.0 / norms) @ x
        sim = (xn @ xn.T).tocsr()
        if rel.min_support > 1:
            b = (x > 0).astype(np.float32)
            support = (b @ b.T).tocsr()
            sim = sim.multiply(support >= rel.min_support).tocsr()
        sim.setdiag(0)
        sim.eliminate_zeros()
        out_r, out_c, out_w = [], [], []
        ip, ix, dv = sim.indptr, sim.indices, sim.data
        for r in np.flatnonzero(np.diff(ip)):
            a, b = ip[r], ip[r + 1]
            # best top_n by cosine, ties broken by entity row (deterministic)
            sel = (np.lexsort((ix[a:b], -dv[a:b]))[:rel.top_n] + a
                   if b - a > rel.top_n else np.arange(a, b))
            out_r.append(np.full(len(sel), r))
            out_c.append(ix[sel])
            out_w.append(dv[sel])
        if not out_r:
            return np.zeros(0, int), np.zeros(0, int), np.zeros(0), dropped
        return (np.concatenate(out_r), np.concatenate(out_c),
                np.concatenate(out_w) * rel.weight, dropped)


def _ranges(starts: "np.ndarray", ends: "np.ndarray") -> "np.ndarray":
    """Concatenation of ``arange(s, e)`` for each pair, vectorised."""
    import numpy as np

    lens = ends - starts
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(ends - lens.cumsum(), lens)   # start of each range minus its offset
    return offsets + np.arange(total, dtype=np.int64)
