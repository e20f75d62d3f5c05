"""Write the typed music query set: examples/data/lastfm/queries/{queries.jsonl,qrels.tsv}.

For each query type (exact, misspelled, partial, tag, like, vague), draws users uniformly
from plays.parquet, a target artist in proportion to the user's play counts, and asks the
query model (src/ltrr_plugins/simulators/query_model.py) for a query of that type; targets that
cannot carry the type are redrawn, and a target appears at most once per type.

Relevance: the target artist only (grade 1), for every type — the measure is whether an
arm or a pipeline finds the artist the user had in mind (recall@k of the target).

    .venv/bin/python scripts/make_music_queries.py            # 200 per type, seed 2011
    .venv/bin/python scripts/make_music_queries.py --per-type 50 --seed 7 --out /tmp/q
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "data" / "lastfm"


def make(per_type: int, seed: int, data: Path = DATA) -> list[dict]:
    """``per_type`` queries of each type as JSON-able rows, deterministic for ``seed``."""
    import numpy as np

    from ltrr_plugins.simulators.query_model import QUERY_TYPES, QueryModel

    model = QueryModel.from_dir(data)
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    for qtype in QUERY_TYPES:
        seen_targets: set[str] = set()
        seen_texts: set[str] = set()
        n = 0
        tries = 0
        while n < per_type:
            tries += 1
            if tries > 1000 * per_type:
                raise SystemExit(f"could not draw {per_type} distinct '{qtype}' queries")
            user = model.sample_user(rng)
            target = model.sample_target(user, rng)
            if target in seen_targets or not model.feasible(target, qtype):
                continue
            q = model.query(target, qtype, rng)
            if q is None or q.text.casefold() in seen_texts:
                continue
            seen_targets.add(target)
            seen_texts.add(q.text.casefold())
            n += 1
            row = {"id": f"{qtype}-{n:03d}", "query": q.text, "type": qtype,
                   "target": target, "target_name": model.names[model.index[target]],
                   "user_id": user}
            if q.anchor is not None:
                row["anchor"] = q.anchor
            if q.tags:
                row["tags"] = list(q.tags)
            rows.append(row)
    return rows


def write(rows: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "queries.jsonl", "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    with open(out / "qrels.tsv", "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(f"{row['id']}\t0\t{row['target']}\t1\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-type", type=int, default=200, help="queries per type (default 200)")
    p.add_argument("--seed", type=int, default=2011, help="numpy seed (default 2011)")
    p.add_argument("--data", type=Path, default=DATA, help="folder of the Last.fm parquet files")
    p.add_argument("--out", type=Path, default=DATA / "queries", help="output folder")
    args = p.parse_args(argv)
    rows = make(args.per_type, args.seed, args.data)
    write(rows, args.out)
    print(f"wrote {len(rows)} queries to {args.out}/queries.jsonl and qrels.tsv",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
