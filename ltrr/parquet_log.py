"""Append-only logs of immutable Parquet parts (decisions, feedback events).

Each append writes one part atomically (temp + fsync + rename) and never touches
it again, so readers — polars, DuckDB — see whole appends only, and a crash
loses at most the append in flight.
"""

from __future__ import annotations

import io
import os
import time
import uuid
from pathlib import Path

import polars as pl

from ltrr.state import atomic_write_bytes


class ParquetLog:
    """A folder of ``part-*.parquet`` files sharing one schema."""

    def __init__(self, directory: Path, schema: pl.Schema):
        self.directory = Path(directory)
        self.schema = schema

    @property
    def lock_path(self) -> Path:
        """The lock file writers that must not interleave hold (see ``state.file_lock``)."""
        return self.directory / ".append.lock"

    def parts(self) -> list[Path]:
        """Part files, oldest first (names sort by creation time)."""
        return sorted(self.directory.glob("part-*.parquet"))

    def append_frame(self, frame: pl.DataFrame) -> Path | None:
        """Write ``frame`` as a new part; returns its path (None when empty)."""
        if frame.height == 0:
            return None
        frame = frame.select(list(self.schema)).cast(dict(self.schema))
        name = f"part-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"
        buf = io.BytesIO()
        frame.write_parquet(buf, compression="zstd")
        path = self.directory / name
        atomic_write_bytes(path, buf.getvalue())
        return path

    def read(self, parts: list[Path] | None = None) -> pl.DataFrame:
        """Every row (or those of ``parts``), oldest part first."""
        parts = self.parts() if parts is None else parts
        if not parts:
            return self.schema.to_frame()
        return pl.concat([pl.read_parquet(p) for p in parts], how="vertical_relaxed")

    def column(self, name: str) -> pl.Series:
        """One column across all parts, read without the others."""
        parts = self.parts()
        if not parts:
            return pl.Series(name, [], dtype=self.schema[name])
        return pl.scan_parquet(parts).select(name).collect()[name]


def part_time_ns(part: Path | str) -> int:
    """When a part was written (ns since the epoch), from its name."""
    name = Path(part).name
    try:
        return int(name[5:25])
    except ValueError:
        return 0
