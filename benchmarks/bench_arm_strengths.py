"""Per-arm strengths on the music catalog: recall of the target per arm and query type.

Every arm of pipelines/music.yaml gets the same budget (``--depth``, default 100) so
the arms compare fairly; the typed query set is examples/data/lastfm/queries/.
This is the ground the bandit policy learns on: no single arm should win every type.
Writes benchmarks/results/arm_strengths.{json,md} besides the usual JSON on stdout.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

QUERIES = c.ROOT / "examples/data/lastfm/queries"
TYPES = ("exact", "misspelled", "partial", "tag", "like", "vague")


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--depth", type=int, default=100, help="candidates per arm")
    args = p.parse_args()
    started = time.perf_counter()

    from ltrr.compiler import compile_spec
    from ltrr.evaluation import arm_runs, evaluate_breakdown, read_qrels, read_query_fields
    from ltrr.runtime.batch import answer
    from ltrr.runtime.pipeline import Pipeline
    from ltrr.runtime.queries import read_queries
    from ltrr.spec import load_spec_text

    data = yaml.safe_load(c.MUSIC_SPEC.read_text())
    arms = [a["id"] for a in data["arms"]]
    for a in data["arms"]:
        a["max_k"] = max(a.get("max_k", 1000), args.depth)
    data["policy"] = {"use": "static", "budget": args.depth * len(arms),
                      "with": {"allocation": {a: args.depth for a in arms}}}
    data["state_dir"] = ".ltrr/music"            # share the default pipeline's indexes
    plan = compile_spec(load_spec_text(yaml.safe_dump(data, sort_keys=False), c.MUSIC_SPEC))
    c.log("indexing if needed:", c.ensure_music_index(plan)["seconds"], "s")

    queries = read_queries(QUERIES / "queries.jsonl")
    qrels = read_qrels(QUERIES / "qrels.tsv")
    fields = read_query_fields(QUERIES / "queries.jsonl")
    with Pipeline(plan, log_decisions=False) as pipeline:
        decisions = answer(pipeline, queries)
    groups = {q: f.get("type", "?") for q, f in fields.items()}
    cut = f"R@{args.depth}"
    report = evaluate_breakdown({d.request_id: {} for d in decisions}, qrels, [cut],
                                groups=groups, arms=arm_runs(decisions, arms))

    table = {arm: {t: report["arms"][arm]["groups"][t]["measures"][cut] for t in TYPES}
             for arm in arms}
    for arm in arms:
        table[arm]["all"] = report["arms"][arm]["measures"][cut]
    best = {t: max(arms, key=lambda a: table[a][t]) for t in TYPES}
    winners = sorted(set(best.values()))
    lines = [f"# Per-arm recall of the target (R@{args.depth}, each arm given "
             f"{args.depth} candidates)", "",
             f"{len(queries)} queries from examples/data/lastfm/queries, "
             f"`python benchmarks/bench_arm_strengths.py --depth {args.depth}`", "",
             "| arm | " + " | ".join(TYPES) + " | all |",
             "|---|" + "---:|" * (len(TYPES) + 1)]
    for arm in arms:
        cells = [(f"**{table[arm][t]:.3f}**" if best[t] == arm else f"{table[arm][t]:.3f}")
                 for t in TYPES]
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {table[arm]['all']:.3f} |")
    lines += ["", "Best arm per type: " + ", ".join(f"{t}: {best[t]}" for t in TYPES)]
    out_dir = c.BENCH_DIR / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "arm_strengths.md").write_text("\n".join(lines) + "\n")
    (out_dir / "arm_strengths.json").write_text(json.dumps(
        {"depth": args.depth, "recall": table, "best": best}, indent=2) + "\n")
    c.log("\n".join(lines))

    metrics = [c.metric(f"{arm} {cut} ({t})", table[arm][t]) for arm in arms for t in TYPES]
    metrics.append(c.metric("query types won by distinct arms", len(winners), target=">= 2",
                            passed=len(winners) >= 2,
                            note="no single arm wins every type: " + ", ".join(winners)))
    c.emit(c.result("arm_strengths", "Per-arm recall by query type (music)", metrics,
                    {"recall": table, "best": best}, started=started), args.out)


if __name__ == "__main__":
    main()
