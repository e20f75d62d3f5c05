"""The movies example (examples/movies, MovieLens ml-latest-small): a catalog ltrr was not
built on — judged queries before and after learning from simulated users, and a learned
policy at a tight budget.

1. **Judged set** (45 queries written by hand, 6 types): nDCG@10 of ``movies.yaml`` as
   shipped (static allocation).
2. **After feedback.** ``ltrr simulate --user-model interactions`` (targets: movies the
   user rated 4 or more) serves ``--sessions`` sessions with the spec's static policy and
   keeps its decision and event logs; every session whose query equals a judged query
   (normalised) is dropped, then ``ltrr train`` replays the rest into a fresh copy of the
   pipeline — as shipped (its learner is the memory arm), and with a LightGBM ranker —
   and the judged set is scored again. The difference is paired over the judged
   queries, per seed (± paired SE); the seeds' mean is the headline.
A learned policy at budget 10 (``movies-bandit.yaml``) on held-out users and wordings is
``bench_generalisation.py``'s second configuration.

No target is set: these are reported as measured, whatever they show.

    .venv/bin/python benchmarks/bench_movies.py [--sessions 2000] [--seeds 2] [--out F]
"""

from __future__ import annotations

import json
import math
import subprocess
import tempfile
from pathlib import Path
from time import perf_counter

import _common as c

FOLDER = c.ROOT / "examples" / "movies"
USERS = ["--user-model", "interactions", "--with", f"path={FOLDER / 'raw/ratings.csv.gz'}",
         "--with", "user=userId", "--with", "entity=movieId", "--with", "weight=rating",
         "--with", "min_weight=4"]


def ltrr(*args: str) -> str:
    done = subprocess.run([str(c.venv_bin("ltrr")), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"ltrr {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


#: A learned ranker for the movies catalog (its features read these columns).
LIGHTGBM = {"use": "lightgbm", "with": {"popularity": "ratings", "title": "title",
                                         "entity_tags": "tags",
                                         "slot_columns": {"genre": "genres", "tag": "tags"}}}


def copy_spec(name: str, work: Path, state: Path, built: Path, **extra) -> Path:
    """examples/movies/<name>.yaml in ``work`` (data paths absolute), a fresh state folder
    with the built indexes of ``built`` linked in."""
    import yaml

    data = yaml.safe_load((FOLDER / f"{name}.yaml").read_text())
    data["catalog"]["path"] = str(FOLDER / data["catalog"]["path"])
    for arm in data["arms"]:
        for rel in arm.get("with", {}).get("relations", []):
            rel["path"] = str(FOLDER / rel["path"])
    state.mkdir(parents=True)
    for node in built.iterdir():
        if (node / "manifest.json").exists() or node.name.endswith(".cache"):
            (state / node.name).symlink_to(node.resolve(), target_is_directory=True)
    data["state_dir"] = str(state)
    data.update(extra)
    path = work / f"{name}-{state.name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def judged_ndcg(spec: Path) -> dict[str, float]:
    from ltrr.compiler import load_plan
    from ltrr.runtime.batch import evaluate_plan

    result, _ = evaluate_plan(load_plan(spec), FOLDER / "queries.jsonl", FOLDER / "qrels.txt",
                              measures=["nDCG@10"])
    return {q: m["nDCG@10"] for q, m in result["per_query"].items()}


def paired(after: dict[str, float], before: dict[str, float]) -> tuple[float, float]:
    """Mean and standard error of after − before over the queries of ``before``
    (a query the run could not score counts 0)."""
    diffs = [after.get(q, 0.0) - v for q, v in before.items()]
    n = len(diffs)
    mean = sum(diffs) / n
    var = sum((d - mean) ** 2 for d in diffs) / (n - 1)
    return mean, math.sqrt(var / n)


def drop_judged(kept: Path, out: Path, judged: set[str]) -> tuple[int, int]:
    """The kept decision and event logs without the sessions whose query is a judged
    one; returns (sessions kept, sessions dropped)."""
    import polars as pl

    from ltrr.text import normalize

    decisions = pl.read_parquet(kept / "decisions" / "*.parquet")
    drop = {r for r, q in decisions.select("request_id", "query").iter_rows()
            if normalize(q) in judged}
    events = pl.read_parquet(kept / "events" / "*.parquet")
    for name, frame in (("decisions", decisions), ("events", events)):
        (out / name).mkdir(parents=True)
        frame.filter(~pl.col("request_id").is_in(list(drop))).write_parquet(
            out / name / "part-0.parquet")
    return decisions.height - len(drop), len(drop)


def main() -> None:
    ap = c.parser(__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=2000)
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()
    started = perf_counter()

    from ltrr.text import normalize

    built = FOLDER / ".ltrr" / "movies"
    c.log("indexing examples/movies/movies.yaml (reused if built)")
    ltrr("index", str(FOLDER / "movies.yaml"))
    judged = {normalize(json.loads(line)["query"])
              for line in (FOLDER / "queries.jsonl").read_text().splitlines()}
    types = {json.loads(line)["id"]: json.loads(line)["type"]
             for line in (FOLDER / "queries.jsonl").read_text().splitlines()}
    metrics, details = [], {"sessions": args.sessions, "seeds": args.seeds, "feedback": []}
    with tempfile.TemporaryDirectory(prefix="bench-movies-") as tmp:
        work = Path(tmp)
        base = judged_ndcg(copy_spec("movies", work, work / "base", built))
        static = sum(base.values()) / len(base)
        metrics.append(c.metric("judged nDCG@10, movies.yaml as shipped", static,
                                note=f"{len(base)} hand-judged queries"))
        by_type = {}
        for q, v in base.items():
            by_type.setdefault(types[q], []).append(v)
        details["static_by_type"] = {t: round(sum(v) / len(v), 4) for t, v in by_type.items()}

        diffs: dict[str, list[float]] = {}
        for seed in range(args.seeds):
            c.log(f"seed {seed}: {args.sessions} simulated sessions (static policy)")
            spec = copy_spec("movies", work, work / f"sim-{seed}", built)
            ltrr("simulate", str(spec), *USERS, "--sessions", str(args.sessions),
                 "--seed", str(seed), "--keep-state", "--out", str(work / f"out-{seed}"))
            log = work / f"log-{seed}"
            kept, dropped = drop_judged(work / f"out-{seed}" / "state" / "static", log, judged)
            row = {"seed": seed, "sessions_used": kept, "sessions_dropped_judged": dropped}
            for label, extra in (("spec", {}), ("lightgbm ranker", {"ranker": LIGHTGBM})):
                trained = copy_spec("movies", work, work / f"trained-{seed}-{len(row)}",
                                    built, **extra)
                report = ltrr("train", str(trained), "--log", str(log))
                after = judged_ndcg(trained)
                mean, se = paired(after, base)
                diffs.setdefault(label, []).append(mean)
                row[label] = {"ndcg10_after": round(sum(after.values()) / len(after), 4),
                              "diff": round(mean, 4), "paired_se": round(se, 4),
                              "train": report.strip().splitlines()[-3:]}
                metrics.append(c.metric(
                    f"judged nDCG@10 after feedback − before, {label}, seed {seed}", mean,
                    note=f"paired SE {se:.4f} over {len(base)} queries; {kept} sessions "
                         f"learned, {dropped} dropped (query = a judged query)"))
            details["feedback"].append(row)
        for label, values in diffs.items():
            metrics.append(c.metric(f"judged nDCG@10 after feedback − before, {label}, "
                                    "mean over seeds", sum(values) / len(values)))

    c.emit(c.result("movies", "MovieLens example: judged set before and after feedback",
                    metrics, details, started=started), args.out)


if __name__ == "__main__":
    main()
