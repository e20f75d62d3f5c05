"""``years`` slotter: years and decades in the query, as slots a catalog column can match.

"1995 thriller" → ``year = "1995"``; "80s horror", "the 1980s", "'80s", "80's", "eighties"
→ ``decade = "1980s"``. Values are written the way a catalog would store them (a year as
four digits, a decade as its first year and "s"; ``decade_format`` changes that), so a
``bm25`` slot rule can filter or boost on a ``year``/``decade`` column, and the span —
"80s" is not a word any title should match — can leave the free text.

Two-digit decades are read as the 1900s from ``pivot`` on ("30s" → 1930s with the
default 30) and as the 2000s below it ("10s" → 2010s). Only years within ``[first,
last]`` are slotted: "1984" is a year, "2001" too, "4000" and "500" are not. Catalog
agnostic: it reads no column.
"""

from __future__ import annotations

import re

from pydantic import Field, model_validator

from ltrr.components import Params, Slotter
from ltrr.hookspecs import hookimpl
from ltrr.types import Query, Slot

_WORDS = {"twenties": 20, "thirties": 30, "forties": 40, "fifties": 50, "sixties": 60,
          "seventies": 70, "eighties": 80, "nineties": 90}
_PATTERN = re.compile(
    r"(?<![\w'])(?:"
    r"(?P<decade4>\d{3}0)'?s"                     # 1980s, 1980's
    r"|'?(?P<decade2>\d0)'?s"                     # 80s, '80s, 80's
    r"|(?P<year>\d{4})"                           # 1995
    r"|(?P<word>" + "|".join(_WORDS) + r")"       # eighties
    r")(?![\w'])", re.IGNORECASE)


class YearsParams(Params):
    year: str | None = Field("year", description=(
        "Slot name for a year (\"1995\"); null: years are not slotted."))
    decade: str | None = Field("decade", description=(
        "Slot name for a decade (\"80s\" → \"1980s\"); null: decades are not slotted."))
    decade_format: str = Field("{decade}s", description=(
        "How a decade value is written, {decade} being its first year: '{decade}s' → "
        "'1980s' (default); '{decade}' → '1980'. Match it to the catalog's column."))
    first: int = Field(1870, description="Earliest year slotted.")
    last: int = Field(2039, description="Latest year slotted.")
    pivot: int = Field(30, ge=0, le=100, description=(
        "Two-digit decades from this one on are the 1900s ('30s' → 1930s), below it the "
        "2000s ('10s' → 2010s)."))

    @model_validator(mode="after")
    def _check(self):
        if self.first > self.last:
            raise ValueError(f"first ({self.first}) is after last ({self.last})")
        if "{decade}" not in self.decade_format:
            raise ValueError("decade_format must contain {decade}")
        if self.year is None and self.decade is None:
            raise ValueError("year and decade are both null: nothing to slot")
        return self


class YearsSlotter(Slotter):
    """Years and decades in the query ("1995", "80s", "the eighties") as slots."""

    name = "years"
    reads_user = False
    Params = YearsParams

    def slot_batch(self, queries: list[Query]) -> list[list[Slot]]:
        return [self._slot(q.text) for q in queries]

    def _slot(self, text: str) -> list[Slot]:
        p = self.params
        out = []
        for m in _PATTERN.finditer(text):
            if m["year"] is not None:
                if p.year is None or not p.first <= int(m["year"]) <= p.last:
                    continue
                out.append(Slot(p.year, m["year"], m.start(), m.end(), 1.0))
                continue
            if m["decade4"] is not None:
                decade = int(m["decade4"])
            elif m["decade2"] is not None:
                two = int(m["decade2"])
                decade = (1900 if two >= p.pivot else 2000) + two
            else:
                decade = 1900 + _WORDS[m["word"].lower()]
            if p.decade is None or not p.first - 9 <= decade <= p.last:
                continue
            out.append(Slot(p.decade, p.decade_format.format(decade=decade),
                            m.start(), m.end(), 1.0))
        return out


@hookimpl
def ltrr_components():
    return [YearsSlotter]
