"""Offline evaluation of a pipeline against relevance judgements, via ir-measures.

Metrics come from ir-measures (pytrec_eval underneath), not hand-written code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ltrr.errors import Location, RunError
from ltrr.runtime.queries import read_text
from ltrr.types import Decision

DEFAULT_MEASURES = ("nDCG@10", "R@100", "R@1000", "RR@10")


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """TREC (``qid 0 docid rel``) or BEIR TSV (``query-id<TAB>corpus-id<TAB>score``, header)."""
    try:
        text = read_text(Path(path))
    except FileNotFoundError:
        raise RunError("qrels file not found", where=Location(str(path))) from None
    qrels: dict[str, dict[str, int]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts or (n == 1 and parts[0] in ("query-id", "qid", "query_id")):
            continue
        if len(parts) == 4:
            qid, _, doc, rel = parts
        elif len(parts) == 3:
            qid, doc, rel = parts
        else:
            raise RunError("expected 'qid docid rel' or 'qid 0 docid rel'",
                           where=Location(str(path), n))
        try:
            qrels.setdefault(qid, {})[doc] = int(float(rel))
        except ValueError:
            raise RunError(f"relevance '{rel}' is not a number", where=Location(str(path), n)) \
                from None
    return qrels


def parse_measures(names: list[str] | tuple[str, ...]):
    import ir_measures

    try:
        return [ir_measures.parse_measure(m) for m in names]
    except (ValueError, NameError, SyntaxError, TypeError) as exc:
        raise RunError(f"unknown measure in {', '.join(names)}: {exc}",
                       hint="use ir-measures names such as nDCG@10, R@100, RR@10, AP") from None


def run_of(decisions: list[Decision]) -> dict[str, dict[str, float]]:
    """Decisions as an ir-measures run: qid → {docid: score}.

    Scores are the final ranking's; equal scores are ordered as trec_eval orders
    them (by docid), the convention published reference figures follow.
    """
    return {d.request_id: {r.entity_id: float(r.score) for r in d.ranking} for d in decisions}


def evaluate_run(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]],
                 measures=DEFAULT_MEASURES) -> dict[str, Any]:
    """Aggregate and per-query figures for ``run`` against ``qrels``."""
    import ir_measures

    parsed = parse_measures(list(measures))
    aggregate = ir_measures.calc_aggregate(parsed, qrels, run)
    per_query: dict[str, dict[str, float]] = {}
    for m in ir_measures.iter_calc(parsed, qrels, run):
        per_query.setdefault(m.query_id, {})[str(m.measure)] = m.value
    return {"measures": {str(m): aggregate[m] for m in parsed},
            "queries": len(run), "judged_queries": len(set(run) & set(qrels)),
            "per_query": per_query}
