"""Offline evaluation of a pipeline against relevance judgements, via ir-measures.

Metrics come from ir-measures (pytrec_eval underneath), not hand-written code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ltrr.errors import Location, RunError
from ltrr.runtime.queries import read_text
from ltrr.types import Decision

if TYPE_CHECKING:
    import numpy as np

DEFAULT_MEASURES = ("nDCG@10", "R@100", "R@1000", "RR@10")


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """TREC (``qid 0 docid rel``) or BEIR TSV (``query-id<TAB>corpus-id<TAB>score``, header)."""
    try:
        text = read_text(Path(path), "qrels file")
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise RunError(f"cannot read qrels file: {exc}", where=Location(str(path))) from None
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
    """Decisions as an ir-measures run: qid → {docid: 1/rank}, the order that was served.

    The ranker's own scores are not passed: the measures would re-sort equal scores by
    entity id (descending for pytrec_eval's, ascending for ``RR@k``), so a tie would be
    evaluated in an order nobody was shown, and differently by different measures
    (docs/evaluation.md, "Ties").
    """
    return {d.request_id: {r.entity_id: 1.0 / r.rank for r in d.ranking} for d in decisions}


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


def graded_metrics(groups: "list[tuple[np.ndarray, np.ndarray]]", k: int = 10
                   ) -> dict[str, float]:
    """MRR (of the first entity with a positive label) and nDCG@k (gain ``2**label - 1``)
    over ``(scores, labels)`` groups, e.g. a learned ranker's held-out requests; groups
    without a positive label are left out. Equal scores keep the groups' order.

    Labels may be fractional (event weights): each positive value becomes a relevance
    level whose gain, scaled by 10**6 to the integers pytrec_eval takes (nDCG does not
    change when every gain is scaled), is ``2**label - 1``.
    """
    import ir_measures
    import numpy as np
    from ir_measures import RR, nDCG

    values = sorted({float(v) for _, labels in groups for v in labels if v > 0})
    level = {v: i + 1 for i, v in enumerate(values)}
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    for q, (scores, labels) in enumerate(groups):
        if not (labels > 0).any():
            continue
        order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")
        run[str(q)] = {str(i): 1.0 / (r + 1) for r, i in enumerate(order)}   # as ranked
        qrels[str(q)] = {str(i): level[float(v)] for i, v in enumerate(labels) if v > 0}
    if not qrels:
        return {"mrr": 0.0, f"ndcg@{k}": 0.0, "requests": 0}
    ndcg = nDCG(gains={n: round((2.0 ** v - 1) * 1e6) for v, n in level.items()}) @ k
    agg = ir_measures.calc_aggregate([RR, ndcg], qrels, run)
    return {"mrr": round(float(agg[RR]), 4), f"ndcg@{k}": round(float(agg[ndcg]), 4),
            "requests": len(qrels)}


# --- grouped and per-arm evaluation ---------------------------------------------------------

MISSING = "(none)"      # group of a query whose JSONL line lacks the --by field


def read_query_fields(path: Path) -> dict[str, dict[str, Any]]:
    """Every field of each JSONL query line, by query id (the id as ``read_queries`` reads it).

    ``read_queries`` keeps only id, text, user and context; ``--by`` needs the rest (``type``,
    ``target``, ...), so the file is read again here.
    """
    path = Path(path)
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    if Path(name).suffix.lower() not in (".jsonl", ".json", ".ndjson"):
        raise RunError("--by needs a JSONL query file (a TSV line has no fields to group by)",
                       where=Location(str(path)),
                       hint='write the queries as JSONL: {"id": ..., "query": ..., "type": ...}')
    fields: dict[str, dict[str, Any]] = {}
    for n, line in enumerate(read_text(path, "query file").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise RunError(f"invalid JSON: {exc}", where=Location(str(path), n)) from None
        if isinstance(obj, dict):
            fields[str(obj.get("id", obj.get("_id", n)))] = obj
    return fields


def groups_by(fields: dict[str, dict[str, Any]], qids: list[str], by: str,
              path: Path | str = "queries") -> dict[str, str]:
    """Query id → group label: the value of field ``by`` (as text), ``(none)`` if absent."""
    present = [q for q in qids if by in fields.get(q, {})]
    if not present:
        seen = sorted({k for q in qids for k in fields.get(q, {})} - {"query", "text"})
        raise RunError(f"no judged query has a field '{by}'", where=Location(str(path)),
                       field="--by", hint=f"fields in the file: {', '.join(seen) or 'none'}")
    out = {}
    for q in qids:
        value = fields.get(q, {}).get(by, MISSING)
        out[q] = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return out


def arm_runs(decisions: list[Decision], arms: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """Per arm, an ir-measures run of the candidates the pipeline took from it.

    ``Decision.candidates[arm]`` is in the arm's own rank order; scores are ``1/rank`` so
    that order survives ties in the arm's scores. A query where the arm contributed nothing
    (not allocated, failed, found nothing) has an empty list, which scores 0.
    """
    return {arm: {d.request_id: {c.entity_id: 1.0 / c.rank
                                 for c in d.candidates.get(arm, ())}
                  for d in decisions}
            for arm in arms}


def _aggregate(run, qrels, qids, parsed) -> dict[str, float]:
    import ir_measures

    sub_qrels = {q: qrels[q] for q in qids if q in qrels}
    sub_run = {q: run.get(q, {}) for q in qids}
    values = ir_measures.calc_aggregate(parsed, sub_qrels, sub_run)
    return {str(m): float(values.get(m, 0.0)) for m in parsed}


def evaluate_breakdown(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]],
                       measures, *, groups: dict[str, str] | None = None,
                       arms: dict[str, dict[str, dict[str, float]]] | None = None
                       ) -> dict[str, Any]:
    """Measures per group of queries and per arm (× group), all computed by ir-measures.

    ``groups`` maps query id → label (order of first appearance is kept); ``arms`` maps arm
    id → its run (see :func:`arm_runs`). Queries are those of ``run`` with judgements.
    Returns ``{"groups": {label: {"queries", "measures"}}, "arms": {arm: {"measures",
    "queries_with_candidates", "groups": {label: {...}}}}}`` (keys present when asked for).
    """
    parsed = parse_measures(list(measures))
    qids = [q for q in run if q in qrels]
    members: dict[str, list[str]] = {}
    if groups is not None:
        for q in qids:
            members.setdefault(groups.get(q, MISSING), []).append(q)
    out: dict[str, Any] = {}
    if groups is not None:
        out["groups"] = {g: {"queries": len(qs), "measures": _aggregate(run, qrels, qs, parsed)}
                         for g, qs in members.items()}
    if arms is not None:
        out["arms"] = {}
        for arm, arun in arms.items():
            entry: dict[str, Any] = {
                "measures": _aggregate(arun, qrels, qids, parsed),
                "queries_with_candidates": sum(bool(arun.get(q)) for q in qids)}
            if groups is not None:
                entry["groups"] = {
                    g: {"queries": len(qs),
                        "queries_with_candidates": sum(bool(arun.get(q)) for q in qs),
                        "measures": _aggregate(arun, qrels, qs, parsed)}
                    for g, qs in members.items()}
            out["arms"][arm] = entry
    return out
