"""A learner's cursor: the event-log appends it has learned from.

Stored compactly as ``{"through": name, "parts": [names]}``: every append whose part
name sorts at or before ``through`` is learned, and so are the few newer ones listed
(a server with several workers learns a part once the decisions it answers settled,
so some are learned out of order). Event-log part names sort in append order
(``EventLog.monotonic``), which keeps the list short; names are those of the original
appends, which compaction keeps (``parquet_log.Piece``). The older form, ``{"parts":
[every name]}``, is read too and rewritten compactly.

An unreadable cursor is moved aside (``<name>.damaged-<time>``) and rebuilt from the
log: it is written after each learning, so the appends logged before the damaged file
was last written count as learned, and the later ones are learned now. The warning
names the file and this consequence.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ltrr.parquet_log import part_time_ns
from ltrr.state import atomic_write_json

log = logging.getLogger("ltrr")


@dataclass(frozen=True)
class Cursor:
    """Learned: every name up to ``through``, and those in ``parts``."""

    through: str = ""
    parts: frozenset[str] = field(default_factory=frozenset)

    def learned(self, name: str) -> bool:
        return name <= self.through or name in self.parts

    def advanced(self, learned: Iterable[str], names: list[str]) -> "Cursor":
        """The cursor after learning ``learned``; ``names``: the log's appends, sorted."""
        done = set(self.parts) | set(learned)
        through = self.through
        for name in sorted(names):
            if name <= through:
                continue
            if name not in done:
                break
            through = name
        listed = set(names)         # a name no longer in the log (quarantined) is dropped
        return Cursor(through, frozenset(n for n in done if n > through and n in listed))

    def to_json(self) -> dict[str, Any]:
        return {"through": self.through, "parts": sorted(self.parts)}

    @classmethod
    def from_json(cls, obj: Any) -> "Cursor":
        """ValueError unless ``obj`` is a cursor (the compact form or the old one)."""
        if not isinstance(obj, dict) or not isinstance(obj.get("parts"), list) \
                or not all(isinstance(n, str) for n in obj["parts"]) \
                or not isinstance(obj.get("through", ""), str):
            raise ValueError('expected {"through": "<part name>", "parts": ["<part name>", '
                             '...]}')
        return cls(obj.get("through", ""), frozenset(obj["parts"]))


def load(path: Path) -> Any:
    """The JSON in ``path`` (None if missing); DamagedCursor if it is not JSON."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise DamagedCursor(path, f"not JSON: {exc}") from None


class DamagedCursor(Exception):
    """A cursor file that cannot be read."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def read_cursor(path: Path, names: Callable[[], list[str]], *, repair: bool = True
                ) -> Cursor:
    """The cursor in ``path`` (empty when missing). If it is unreadable: with ``repair``
    it is moved aside and rebuilt from ``names()`` (the log's appends, sorted), and the
    rebuilt cursor written; without, an empty cursor (nothing counts as learned)."""
    try:
        obj = load(path)
        return Cursor() if obj is None else Cursor.from_json(obj)
    except (DamagedCursor, ValueError) as exc:
        reason = exc.reason if isinstance(exc, DamagedCursor) else str(exc)
        if not repair:
            return Cursor()
        cursor = repaired(path, reason, names)
        write_cursor(path, cursor)
        return cursor


def repaired(path: Path, reason: str, names: Callable[[], list[str]]) -> Cursor:
    """Move a damaged cursor file aside; the cursor rebuilt from when it was written."""
    written = path.stat().st_mtime_ns
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
    os.replace(path, aside)
    through = ""
    for name in names():
        if part_time_ns(name) <= written:
            through = max(through, name)
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(written / 1e9))
    log.warning("%s is unreadable (%s): moved to %s and rebuilt from the event log: the "
                "events logged before %s (when it was last written) count as learned, later "
                "ones are learned now. If it was damaged after that, events in between are "
                "not learned; to relearn everything, move the learned folder away",
                path, reason, aside.name, when)
    return Cursor(through)


def write_cursor(path: Path, cursor: Cursor) -> None:
    atomic_write_json(path, cursor.to_json())


def damaged_cursors(learned_dir: Path) -> list[str]:
    """The cursors of ``learned_dir`` moved aside as damaged."""
    return sorted(str(p) for p in learned_dir.glob("*.damaged-*"))
