"""The ``years`` slotter: years and decades as slots, in every spelling people type."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from ltrr.components import ComponentContext, PlanView
from ltrr.types import Query
from ltrr_plugins.slotters.years import YearsParams, YearsSlotter

ROOT = Path(__file__).resolve().parents[1]


def slotter(**params) -> YearsSlotter:
    view = PlanView(arms=(), slotters=("when",), budget=10, output_k=10, arm_max_k={})
    s = YearsSlotter(YearsParams.model_validate(params),
                     ComponentContext("when", ROOT / ".ltrr-unused", ROOT, lambda: None, view))
    s.open()
    return s


def slots(text: str, **params) -> list[tuple[str, str, str]]:
    (found,) = slotter(**params).slot_batch([Query("q", text)])
    return [(s.name, s.value, text[s.start:s.end]) for s in found]


@pytest.mark.parametrize("text,expected", [
    ("80s horror", [("decade", "1980s", "80s")]),
    ("horror from the '80s", [("decade", "1980s", "'80s")]),
    ("80's horror", [("decade", "1980s", "80's")]),
    ("the 1980s", [("decade", "1980s", "1980s")]),
    ("Eighties comedy", [("decade", "1980s", "Eighties")]),
    ("10s pop", [("decade", "2010s", "10s")]),            # below the pivot: 2000s
    ("30s screwball", [("decade", "1930s", "30s")]),
    ("1995 thriller", [("year", "1995", "1995")]),
    ("2001 a space odyssey", [("year", "2001", "2001")]),
    ("blade runner 2049", []),                              # after `last`: not a year
    ("around the world in 80 days", []),                   # 80 is not a decade
    ("ocean's 11", []),
    ("se7en", []),
    ("300", []),
    ("1980s and 90s", [("decade", "1980s", "1980s"), ("decade", "1990s", "90s")]),
])
def test_years_and_decades(text, expected):
    assert slots(text) == expected


def test_names_format_and_range():
    assert slots("80s 1984", decade="era", year=None, decade_format="{decade}") == [
        ("era", "1980", "80s")]
    assert slots("2049 80s", last=2050) == [("year", "2049", "2049"), ("decade", "1980s", "80s")]
    assert slots("20s jazz", pivot=20) == [("decade", "1920s", "20s")]


@pytest.mark.parametrize("params,words", [
    ({"first": 2000, "last": 1900}, "after last"),
    ({"decade_format": "{year}s"}, "{decade}"),
    ({"year": None, "decade": None}, "nothing to slot"),
])
def test_bad_params(params, words):
    with pytest.raises(ValidationError, match=words):
        YearsParams.model_validate(params)
