"""The catalog: the entities a pipeline retrieves, loaded once with polars."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import polars as pl

from ltrr.errors import Location, StateError
from ltrr.files import check_file, content_digest, shown_names
from ltrr.tables import infer_format, list_values, read_table


class Catalog:
    """A table of entities with a string id column.

    ``ids[i]`` is the id of row ``i``; ``row_of(id)`` the inverse. ``where`` is the
    spec position of ``catalog.path``, named by errors. Only a regular file is read
    (:func:`ltrr.files.check_file`), and messages never echo more of it than
    column names, shortened.
    """

    def __init__(self, path: Path, id_column: str = "id", fmt: str | None = None,
                 where: Location | None = None, lists: dict[str, str] | None = None):
        self.path = Path(path)
        self.id_column = id_column
        self.lists = dict(lists or {})
        self.where = where
        self.format = fmt or infer_format(self.path)

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
        return df.with_columns(pl.col(self.id_column).cast(pl.String), *(
            list_values(c, sep) for c, sep in self.lists.items() if c in df.columns))

    @cached_property
    def ids(self) -> list[str]:
        return self.frame[self.id_column].to_list()

    @cached_property
    def _rows(self) -> dict[str, int]:
        return {entity: i for i, entity in enumerate(self.ids)}

    def row_of(self, entity_id: str) -> int | None:
        return self._rows.get(entity_id)

    def __len__(self) -> int:
        return self.frame.height

    @cached_property
    def fingerprint(self) -> str:
        """Content hash of the catalog file (versions every index built from it)."""
        self._check()
        return content_digest(self.path)

