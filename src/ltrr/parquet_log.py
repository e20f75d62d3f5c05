"""Append-only logs of immutable Parquet parts (decisions, feedback events).

Each append writes one part atomically (temp + fsync + rename) and never touches
it again, so readers — polars, DuckDB — see whole appends only, and a crash
loses at most the append in flight.

A damaged part (truncated, garbled, not this log's schema) is moved to
``quarantine/`` beside a ``.reason`` file and named in a warning; reading goes on
without it. :meth:`ParquetLog.compact` merges small parts once there are more than
``MAX_PARTS``: the merged part (its name's pid field is 0) records the parts it
replaces and, per original part, its name and rows, so a cursor that names original
parts keeps its meaning. Its rename is the commit point: a crash before it leaves
the old parts, after it the old parts are superseded (not read) and removed by the
next compaction.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Callable, NamedTuple, TypeVar

import polars as pl

from ltrr.state import atomic_write_bytes, file_lock, fsync_dir

QUARANTINE = "quarantine"
MAX_PARTS = 64                   # more parts than this: compact the small ones
SMALL_BYTES = 8 * 2**20          # parts up to this size are merged
MERGED_BYTES = 64 * 2**20        # and into parts of at most about this size
COMPACTED_PID = "0"              # the pid field of a compacted part's name
_INPUTS = "ltrr_compacted_inputs"      # metadata: JSON list of the merged files' names
_SOURCES = "ltrr_compacted_sources"    # metadata: JSON [[original part name, rows], ...]

log = logging.getLogger("ltrr")
T = TypeVar("T")


class Piece(NamedTuple):
    """The rows one original append wrote, wherever they are now: the whole of ``path``
    (``rows`` None), or ``rows`` rows from ``offset`` of a compacted part."""

    name: str
    path: Path
    offset: int = 0
    rows: int | None = None


class ParquetLog:
    """A folder of ``part-*.parquet`` files sharing one schema."""

    monotonic = False       # names sort in append order (appenders hold the lock)
    # compacted part name → its metadata, shared by every instance (parts are immutable
    # and their names unique: read once per process, not on every listing)
    _meta: dict[str, dict] = {}

    def __init__(self, directory: Path, schema: pl.Schema):
        self.directory = Path(directory)
        self.schema = schema

    @property
    def lock_path(self) -> Path:
        """The lock file writers that must not interleave hold (see ``state.file_lock``)."""
        return self.directory / ".append.lock"

    @property
    def quarantine_dir(self) -> Path:
        return self.directory / QUARANTINE

    # --- listing --------------------------------------------------------------------------

    def files(self) -> list[Path]:
        """Every part file, superseded ones included, oldest first."""
        return sorted(self.directory.glob("part-*.parquet"))

    def parts(self) -> list[Path]:
        """The live part files, oldest first (names sort by creation time)."""
        while True:
            files = self.files()
            superseded: set[str] = set()
            try:
                for f in files:
                    if is_compacted(f):
                        meta = self._compaction(f)
                        if meta is None:
                            raise FileNotFoundError(f)     # quarantined just now
                        superseded.update(meta[_INPUTS])
            except FileNotFoundError:
                continue            # merged again by another process meanwhile: list again
            return [f for f in files if f.name not in superseded]

    def pieces(self, parts: list[Path] | None = None) -> list[Piece]:
        """The original appends in ``parts`` (default: all), oldest first."""
        out: list[Piece] = []
        for part in self.parts() if parts is None else parts:
            meta = self._compaction(part) if is_compacted(part) else None
            if meta is None:
                out.append(Piece(part.name, part))
                continue
            offset = 0
            for name, rows in meta[_SOURCES]:
                out.append(Piece(name, part, offset, rows))
                offset += rows
        return out

    def _compaction(self, part: Path) -> dict | None:
        """A compacted part's inputs and sources (None: damaged, now quarantined)."""
        meta = self._meta.get(part.name)
        if meta is None:
            try:
                raw = pl.read_parquet_metadata(part)
                meta = {_INPUTS: json.loads(raw[_INPUTS]),
                        _SOURCES: [(str(n), int(r)) for n, r in json.loads(raw[_SOURCES])]}
            except FileNotFoundError:
                raise
            except Exception as exc:
                self.quarantine(part, f"compaction metadata unreadable: {_brief(exc)}")
                return None
            self._meta[part.name] = meta
        return meta

    # --- writing --------------------------------------------------------------------------

    def append_frame(self, frame: pl.DataFrame) -> Path | None:
        """Write ``frame`` as a new part; returns its path (None when empty)."""
        if frame.height == 0:
            return None
        frame = frame.select(list(self.schema)).cast(dict(self.schema))
        now = time.time_ns()
        if self.monotonic:          # after the newest part, even if the clock went back
            files = self.files()
            if files:
                now = max(now, part_time_ns(files[-1]) + 1)
        name = f"part-{now:020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"
        buf = io.BytesIO()
        frame.write_parquet(buf, compression="zstd")
        path = self.directory / name
        atomic_write_bytes(path, buf.getvalue())
        return path

    # --- reading --------------------------------------------------------------------------

    def read(self, parts: list[Path] | None = None) -> pl.DataFrame:
        """Every row (or those of ``parts``), oldest part first; damaged parts are
        quarantined and left out."""
        if parts is None:
            return self._listed(lambda ps: self._guarded(ps, self._concat))
        return self._guarded(parts, self._concat)

    def read_pieces(self, pieces: list[Piece], *, logged_at: bool = False) -> pl.DataFrame:
        """The rows of ``pieces``, in their order (each file read once); ``logged_at``
        adds that column: when each row's append was written (epoch seconds)."""
        frames: dict[Path, pl.DataFrame] = {}
        for path in dict.fromkeys(p.path for p in pieces):
            try:
                frames[path] = (pl.read_parquet(path).select(list(self.schema))
                                .cast(dict(self.schema)))
            except FileNotFoundError:
                raise
            except Exception as exc:
                self.quarantine(path, self.damage(path) or _brief(exc))
        out = [frames[p.path] if p.rows is None else frames[p.path].slice(p.offset, p.rows)
               for p in pieces if p.path in frames]
        if logged_at:
            at = [p for p in pieces if p.path in frames]
            out = [f.with_columns(pl.lit(part_time_ns(p.name) / 1e9, pl.Float64)
                                  .alias("logged_at")) for f, p in zip(out, at)]
        if not out:
            empty = self.schema.to_frame()
            return empty.with_columns(pl.lit(None, pl.Float64).alias("logged_at")) \
                if logged_at else empty
        return pl.concat(out, how="vertical_relaxed")

    def column(self, name: str) -> pl.Series:
        """One column across all parts, read without the others."""
        def scan(parts: list[Path]) -> pl.Series:
            if not parts:
                return pl.Series(name, [], dtype=self.schema[name])
            return pl.scan_parquet(parts).select(name).collect()[name]

        return self._listed(lambda ps: self._guarded(ps, scan))

    def scan(self, parts: list[Path], read: Callable[[list[Path]], T]) -> T:
        """``read(parts)``; if a part is damaged, quarantine it and read the others."""
        return self._guarded(parts, read)

    def _concat(self, parts: list[Path]) -> pl.DataFrame:
        if not parts:
            return self.schema.to_frame()
        return pl.concat([pl.read_parquet(p) for p in parts], how="vertical_relaxed")

    def _listed(self, read: Callable[[list[Path]], T]) -> T:
        """``read(self.parts())``, listed again if a compaction removed a part meanwhile."""
        for _ in range(5):
            try:
                return read(self.parts())
            except FileNotFoundError:
                continue
        return read(self.parts())

    def _guarded(self, parts: list[Path], read: Callable[[list[Path]], T]) -> T:
        try:
            return read(parts)
        except FileNotFoundError:
            raise
        except Exception:
            good = self.salvage(parts)
            if len(good) == len(parts):
                raise                       # not a damaged part: a real error
            return read(good)

    # --- damage ---------------------------------------------------------------------------

    def damage(self, part: Path) -> str | None:
        """Why ``part`` cannot be read as part of this log (None: it can)."""
        try:
            frame = pl.read_parquet(part)
        except FileNotFoundError:
            raise
        except Exception as exc:
            return _brief(exc)
        missing = [c for c in self.schema if c not in frame.columns]
        if missing:
            return f"lacks column(s) {', '.join(missing)} of this log"
        try:
            frame.select(list(self.schema)).cast(dict(self.schema))
        except Exception as exc:
            return f"columns of the wrong type: {_brief(exc)}"
        return None

    def salvage(self, parts: list[Path]) -> list[Path]:
        """Quarantine the damaged parts among ``parts``; return the others."""
        good = []
        for part in parts:
            try:
                reason = self.damage(part)
            except FileNotFoundError:
                continue
            if reason is None:
                good.append(part)
            else:
                self.quarantine(part, reason)
        return good

    def quarantine(self, part: Path, reason: str) -> Path | None:
        """Move a damaged part to ``quarantine/`` with a ``.reason`` file; logged."""
        dest = self.quarantine_dir / part.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(part, dest)
        except FileNotFoundError:
            return None                      # another process moved it first
        (dest.parent / (part.name + ".reason")).write_text(
            f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {reason}\n")
        fsync_dir(self.directory)
        self._meta.pop(part.name, None)
        log.warning("%s is damaged (%s): moved to %s; the log goes on without its rows",
                    part, reason, dest)
        return dest

    def quarantined(self) -> list[dict[str, str]]:
        """The quarantined parts: ``{"part": path, "reason": why}``, oldest first."""
        out = []
        for path in sorted(self.quarantine_dir.glob("part-*.parquet")):
            try:
                reason = (path.parent / (path.name + ".reason")).read_text().strip()
            except OSError:
                reason = "damaged"
            out.append({"part": str(path), "reason": reason})
        return out

    # --- compaction -----------------------------------------------------------------------

    def compact(self, max_parts: int = MAX_PARTS, small_bytes: int = SMALL_BYTES,
                merged_bytes: int = MERGED_BYTES) -> dict[str, int] | None:
        """Merge runs of consecutive small parts once there are more than ``max_parts``.

        Holds the append lock: appenders wait, and two compactions never merge the same
        parts. Each merged part is written, fsynced and renamed before its inputs are
        removed; every row stays exactly once. Returns ``{"parts_before",
        "parts_after", "merged"}``, or None when there was nothing to do.
        """
        files = self.files()
        if len(files) <= max_parts and self.parts() == files:
            return None                       # the usual case: appenders need not wait
        with file_lock(self.lock_path):
            self._remove_superseded()
            parts = self.parts()
            if len(parts) <= max_parts:
                return None
            groups: list[list[Path]] = []
            run: list[Path] = []
            size = 0
            for part in parts:
                try:
                    n = part.stat().st_size
                except FileNotFoundError:
                    continue
                if n > small_bytes or size + n > merged_bytes:
                    if len(run) > 1:
                        groups.append(run)
                    run, size = ([], 0) if n > small_bytes else ([part], n)
                    continue
                run.append(part)
                size += n
            if len(run) > 1:
                groups.append(run)
            merged = 0
            for group in groups:
                if self._merge(group):
                    merged += len(group)
            return {"parts_before": len(parts), "parts_after": len(self.parts()),
                    "merged": merged}

    def _merge(self, group: list[Path]) -> bool:
        frames, sources, read = [], [], []
        for part in group:
            try:
                frame = pl.read_parquet(part).select(list(self.schema)).cast(dict(self.schema))
                meta = self._compaction(part) if is_compacted(part) else None
            except FileNotFoundError:
                raise
            except Exception as exc:
                self.quarantine(part, self.damage(part) or _brief(exc))
                continue
            if is_compacted(part) and meta is None:
                continue                                   # quarantined meanwhile
            frames.append(frame)
            read.append(part)
            sources.extend(meta[_SOURCES] if meta else [(part.name, frame.height)])
        group = read
        if len(group) < 2:
            return False
        frame = pl.concat(frames, how="vertical_relaxed")
        last = part_time_ns(group[-1])
        name = f"part-{last:020d}-{COMPACTED_PID}-{uuid.uuid4().hex[:8]}.parquet"
        buf = io.BytesIO()
        frame.write_parquet(buf, compression="zstd", metadata={
            _INPUTS: json.dumps([p.name for p in group]),
            _SOURCES: json.dumps([[n, r] for n, r in sources])})
        atomic_write_bytes(self.directory / name, buf.getvalue())   # the commit point
        self._remove(group)
        return True

    def _remove_superseded(self) -> None:
        """Remove the inputs a compaction committed but did not remove (a crash)."""
        live = set(self.parts())
        self._remove([f for f in self.files() if f not in live])

    def _remove(self, parts: list[Path]) -> None:
        for part in parts:
            try:
                part.unlink()
            except FileNotFoundError:
                pass
            self._meta.pop(part.name, None)
        if parts:
            fsync_dir(self.directory)


def is_compacted(part: Path | str) -> bool:
    """Whether a part was written by :meth:`ParquetLog.compact` (pid field 0)."""
    fields = Path(part).name.split("-")
    return len(fields) >= 3 and fields[2] == COMPACTED_PID


def part_time_ns(part: Path | str) -> int:
    """When a part was written (ns since the epoch), from its name."""
    name = Path(part).name
    try:
        return int(name[5:25])
    except ValueError:
        return 0


def _brief(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
