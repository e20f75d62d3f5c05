"""How each field is analysed: Anserini's English analyzer (Lucene's English stopwords)
with a stemmer chosen per field — ``porter`` (the default, as Anserini's BEIR
regressions), ``krovetz`` (lighter: "animated" stays apart from "animal") or ``none``
(exact words, e.g. for titles).

An index records its choice in :data:`ANALYSIS_FILE` next to Lucene's files, so a
searcher analyses queries the way each field was indexed; an index without the file
(built before per-field analysis) is Porter throughout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

#: Stemmers a field may use; the first is the default.
STEMMERS = ("porter", "krovetz", "none")
ANALYSIS_FILE = "ltrr-analysis.json"


def check_stemmers(stemmers: Mapping[str, str] | None) -> dict[str, str]:
    """``{field: stemmer}`` without default entries; ValueError naming a bad stemmer."""
    out = {}
    for field, stemmer in (stemmers or {}).items():
        if stemmer not in STEMMERS:
            raise ValueError(f"field {field!r}: unknown stemmer {stemmer!r} "
                             f"(one of {', '.join(STEMMERS)})")
        if stemmer != STEMMERS[0]:
            out[field] = stemmer
    return out


def analyzer(java, stemmer: str = "porter"):
    """Anserini's English analyzer with ``stemmer`` (stopwords removed in every case:
    the list-value gap of the indexer relies on it)."""
    if stemmer == "porter":
        return java.DefaultEnglishAnalyzer.newDefaultInstance()
    return java.DefaultEnglishAnalyzer.fromArguments(stemmer, False, None)


def field_analyzers(java, stemmers: Mapping[str, str]):
    """``(wrapper, {field: analyzer})``: a PerFieldAnalyzerWrapper (Porter by default) and
    the analyzer of each field that differs."""
    shared = {s: analyzer(java, s) for s in set(stemmers.values())}
    own = {f: shared[s] for f, s in stemmers.items()}
    default = analyzer(java)
    if not own:
        return default, {}
    jmap = java.HashMap()
    for f, a in own.items():
        jmap.put(f, a)
    return java.PerFieldAnalyzerWrapper(default, jmap), own


def write_analysis(index_dir: Path, stemmers: Mapping[str, str]) -> None:
    (Path(index_dir) / ANALYSIS_FILE).write_text(json.dumps({"stemmers": dict(stemmers)}))


def read_analysis(index_dir: Path) -> dict[str, str]:
    """The index's ``{field: stemmer}`` (non-default ones); {} for older indexes."""
    path = Path(index_dir) / ANALYSIS_FILE
    if not path.exists():
        return {}
    return check_stemmers(json.loads(path.read_text()).get("stemmers"))
