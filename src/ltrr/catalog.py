"""The catalog: the entities a pipeline retrieves, loaded once with polars.

Once ``ltrr index`` has mapped its ids and titles (:mod:`ltrr.catalog_map`, attached with
:meth:`Catalog.use_map`), ``id_at``, ``row_of``, ``title_of`` and ``len`` come from the
map, and the table itself is read only by what needs its columns (``frame``, ``ids``).

A catalog may hold several kinds of entity (``catalog.types``: a type column and its
declared values; ids unique across types). An arm that retrieves some types sees a
:meth:`Catalog.of_types` view: the same kind of object over those rows only.
"""

from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from ltrr.errors import DataError, Location, StateError
from ltrr.files import check_file, content_digest, shown, shown_names
from ltrr.tables import infer_format, list_values, read_table

if TYPE_CHECKING:
    from ltrr.catalog_map import CatalogMap


class Catalog:
    """A table of entities with a string id column.

    ``ids[i]`` is the id of row ``i``; ``row_of(id)`` the inverse. ``where`` is the
    spec position of ``catalog.path``, named by errors. Only a regular file is read
    (:func:`ltrr.files.check_file`), and messages never echo more of it than
    column names, shortened. ``type_column``/``types``: the entity types
    (``catalog.types``), checked when the catalog is read — every row has one of
    ``types`` and ids are unique — errors located at ``types_where``.
    """

    def __init__(self, path: Path, id_column: str = "id", fmt: str | None = None,
                 where: Location | None = None, lists: dict[str, str] | None = None,
                 type_column: str | None = None, types: tuple[str, ...] = (),
                 types_where: Location | None = None):
        self.path = Path(path)
        self.id_column = id_column
        self.lists = dict(lists or {})
        self.where = where
        self.format = fmt or infer_format(self.path)
        self.type_column = type_column
        self.types = tuple(types) if type_column else ()
        self.types_where = types_where
        self._map_dir: Path | None = None
        self.title_column: str | None = None

    def use_map(self, folder: Path, title: str | None = None) -> None:
        """Where the mapped ids live (``ltrr index`` writes them: :meth:`write_map`), and
        the spec's title column."""
        self._map_dir, self.title_column = Path(folder), title

    @cached_property
    def map(self) -> "CatalogMap | None":
        """The mapped ids and titles, if written for this content (else None)."""
        if self._map_dir is None:
            return None
        from ltrr.catalog_map import open_catalog_map

        return open_catalog_map(self._map_dir, self.fingerprint, self.id_column,
                                self.title_column)

    def write_map(self) -> bool:
        """Map the ids and titles for later opens (False: not attached, or the ids are
        not unique)."""
        if self._map_dir is None or not self.ids_unique:
            return False
        from ltrr.catalog_map import write_catalog_map

        titles = None
        if self.title_column and self.title_column in self.frame.columns:
            titles = self.frame[self.title_column].cast(pl.String).to_list()
        write_catalog_map(self._map_dir, self.frame[self.id_column].to_list(), titles,
                          self.fingerprint, self.id_column, self.title_column)
        self.__dict__.pop("map", None)
        return True

    @property
    def ids_unique(self) -> bool:
        ids = self.frame[self.id_column]
        return ids.n_unique() == len(ids)

    def _check(self) -> None:
        check_file(self.path, "catalog file", where=self.where,
                   hint="fix catalog.path in the spec (relative to the spec file)")

    @cached_property
    def frame(self) -> pl.DataFrame:
        self._check()
        df = read_table(self.path, self.format, what="catalog file", where=self.where)
        if self.id_column not in df.columns:
            raise StateError(f"catalog {self.path.name} has no id column '{self.id_column}'",
                             hint=f"set catalog.id to one of: {shown_names(df.columns)}")
        df = df.with_columns(pl.col(self.id_column).cast(pl.String), *(
            list_values(c, sep) for c, sep in self.lists.items() if c in df.columns))
        if self.type_column:
            self._check_types(df)
        return df

    def _check_types(self, df: pl.DataFrame) -> None:
        """Every row has a declared type, and no id appears twice."""
        name = self.path.name
        if self.type_column not in df.columns:
            raise DataError(f"catalog {name} has no type column '{shown(self.type_column)}'",
                            where=self.types_where,
                            hint=f"set catalog.types.column to one of: "
                                 f"{shown_names(df.columns)}")
        col = df[self.type_column].cast(pl.String)
        missing = int(col.null_count())
        if missing:
            row = int(col.is_null().arg_max())
            raise DataError(f"catalog {name}: {missing} row(s) have no entity type in "
                            f"column '{shown(self.type_column)}' (first: row {row + 1})",
                            where=self.types_where, hint="give every row one of the types "
                            "in catalog.types.values")
        found = set(col.unique().to_list())
        unknown = sorted(found - set(self.types))
        if unknown:
            raise DataError(f"catalog {name}: column '{shown(self.type_column)}' holds "
                            f"undeclared entity type(s) {', '.join(map(shown, unknown[:5]))}"
                            + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""),
                            where=self.types_where, hint="add them to catalog.types.values "
                            "or fix those rows")
        ids = df[self.id_column]
        if ids.n_unique() != len(ids):
            dup = ids.filter(ids.is_duplicated()).head(1).item()
            raise DataError(f"catalog {name}: entity id '{shown(str(dup))}' appears more than "
                            "once: ids must be unique across entity types",
                            where=self.types_where, hint="prefix ids with their type "
                            "(e.g. 'station:rock') when two types share id spaces")

    @cached_property
    def ids(self) -> list[str]:
        """Entity id of each row, as a list (reads the table: at scale, prefer
        :meth:`id_at` and :meth:`row_of`, which use the map)."""
        return self.frame[self.id_column].to_list()

    def id_at(self, row: int) -> str:
        """The entity id of a row."""
        if self.map is not None:
            return self.map.ids[row]
        return self.ids[row]

    @cached_property
    def _rows(self) -> dict[str, int]:
        return {entity: i for i, entity in enumerate(self.ids)}

    def row_of(self, entity_id: str) -> int | None:
        if self.map is not None:
            return self.map.ids.row_of(entity_id)
        return self._rows.get(entity_id)

    def title_of(self, entity_id: str) -> str | None:
        """The title of an entity (None: unknown entity, no title column or value)."""
        row = self.row_of(entity_id)
        if row is None or not self.title_column:
            return None
        if self.map is not None:
            return self.map.title(row)
        if self.title_column not in self.frame.columns:
            return None
        value = self.frame[self.title_column][row]
        return None if value is None else str(value)

    @property
    def columns(self) -> list[str]:
        """The table's column names (read from a Parquet file's schema if not loaded)."""
        if "frame" not in self.__dict__ and self.format == "parquet":
            self._check()
            try:
                return list(pl.read_parquet_schema(self.path))
            except Exception:
                pass
        return self.frame.columns

    def head(self, columns: list[str], n: int) -> pl.DataFrame:
        """Some rows of some columns (spread over the table if it is loaded, else the
        first ``n`` of a Parquet file, read alone): enough to warm a component up."""
        if "frame" not in self.__dict__ and self.format == "parquet" and not self.lists:
            self._check()
            try:
                return pl.scan_parquet(self.path).select(columns).head(n).collect()
            except Exception:   # a column missing or odd: the full read says why
                pass
        frame = self.frame.select(columns)
        return frame.gather_every(max(1, len(frame) // max(n, 1)))[:n]

    def __len__(self) -> int:
        if self.map is not None:
            return len(self.map.ids)
        return self.frame.height

    @cached_property
    def fingerprint(self) -> str:
        """Content hash of the catalog file (versions every index built from it)."""
        self._check()
        return content_digest(self.path)

    # --- entity types ------------------------------------------------------------------

    @property
    def typed(self) -> bool:
        return bool(self.type_column)

    @cached_property
    def type_of(self) -> dict[str, str]:
        """Entity id → its type (empty for an untyped catalog)."""
        if not self.type_column:
            return {}
        return dict(zip(self.ids, self.frame[self.type_column].cast(pl.String).to_list()))

    def of_types(self, types: tuple[str, ...] | list[str] | None) -> "Catalog":
        """This catalog restricted to rows of ``types`` (itself for None or every type)."""
        if not types or not self.typed or set(types) >= set(self.types):
            return self
        key = tuple(t for t in self.types if t in set(types))
        view = self._views.get(key)
        if view is None:
            view = self._views[key] = CatalogView(self, key)
        return view

    @cached_property
    def _views(self) -> dict[tuple[str, ...], "CatalogView"]:
        return {}


class CatalogView(Catalog):
    """The rows of some entity types of a typed catalog, as a catalog of its own: the
    arms that retrieve those types build and search over it. Its fingerprint is the
    catalog's content and the types."""

    def __init__(self, base: Catalog, types: tuple[str, ...]):
        super().__init__(base.path, base.id_column, base.format, base.where, base.lists,
                         base.type_column, base.types, base.types_where)
        self.base = base
        self.view_types = types

    @cached_property
    def frame(self) -> pl.DataFrame:
        df = self.base.frame
        return df.filter(pl.col(self.type_column).cast(pl.String).is_in(list(self.view_types)))

    @cached_property
    def fingerprint(self) -> str:
        blob = f"{self.base.fingerprint}|types={','.join(self.view_types)}"
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
