"""Feedback ingestion throughput: ``ltrr feedback`` end to end on 100,000 events.

Set-up (not timed): ``pipelines/music-bandit.yaml`` (vw policy, memory arm; its own
indexes, built if missing, linked into temporary state folders) answers ``--queries``
queries through ``Pipeline.run_batch`` — the texts of
``examples/data/lastfm/queries/queries.jsonl`` cycled, with user ids drawn from
``plays.parquet`` — so the decision log is real. About ``--events`` events answer those
decisions: impressions, clicks, plays, skips, favorites, purchases of ranked entities at
their positions, ~10% organic events (no request id, a query and a random artist),
~10% without an event id (derived), ~5% exact duplicates of earlier events. They are
written as JSONL (absent fields omitted) and as Parquet.

Timed, ``--runs`` times per format, each on a fresh state folder (decision log and
indexes linked, empty event log, no learned state):

* ``ingest_file(plan, path)`` end to end — what ``ltrr feedback SPEC EVENTS`` does after
  loading the spec: read + validate, append the new events to the event log (dedup by
  event id), join them to their decisions, and every learner's catch-up (open + learn +
  cursor). Events/s = events in the file / seconds. Target ≥ 20,000 events/s (median).
  The stages come from the report's ``seconds``: read (+ validate), append, open (the
  learners), join, learn (per learner).
* replay: the same file again into the same state: nothing new, nothing to learn.
* a log already holding ``--log-size`` (1,000,000) events, learners up to date
  (cursors at those parts): ingestion of the same file, i.e. what dedup against a big
  log costs.

Baseline, same run, interleaved with the ingestion runs: polars ``read_ndjson`` /
``read_parquet`` of the same file + ``write_parquet`` (zstd) of the result to memory —
the I/O floor of any ingestion. Ratio = ingestion rate / floor rate.

    .venv/bin/python benchmarks/bench_feedback.py [--queries 20000] [--events 100000]
        [--runs 3] [--log-size 1000000] [--work DIR (reuse set-up)] [--out FILE]
"""

from __future__ import annotations

import copy
import io
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path
from time import perf_counter

import _common as c

TARGET = 20_000.0
SPEC = c.ROOT / "pipelines" / "music-bandit.yaml"
QUERIES = c.ROOT / "examples" / "data" / "lastfm" / "queries" / "queries.jsonl"
PLAYS = c.ROOT / "examples" / "data" / "lastfm" / "plays.parquet"
TYPES = {"impression": 0.35, "click": 0.25, "play": 0.2, "skip": 0.12, "favorite": 0.05,
         "purchase": 0.03}


def state_plan(base, state: Path):
    """``base`` (the music-bandit plan) with its state under ``state``."""
    from ltrr.compiler import compile_spec
    from ltrr.spec import Spec
    from ltrr.spec.models import PipelineSpec

    data = copy.deepcopy(base.spec.data)
    data["state_dir"] = str(state)
    data["log"] = {"decisions": True}
    spec = Spec(model=PipelineSpec.model_validate(data), data=data, source=base.spec.source,
                path=base.spec.path)
    return compile_spec(spec)


def fresh_state(base, root: Path, decisions: Path | None) -> Path:
    """A new state folder: the built indexes and caches linked in, ``decisions`` linked
    as the decision log, nothing learned, no events."""
    state = Path(tempfile.mkdtemp(prefix="state-", dir=root))
    for entry in base.spec.state_dir.iterdir():
        if entry.name in ("decisions", "events") or entry.name.endswith(".learned"):
            continue
        (state / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    if decisions is not None:
        (state / "decisions").symlink_to(decisions, target_is_directory=True)
    return state


def serve(base, work: Path, n: int, seed: int) -> Path:
    """Run ``n`` queries through the pipeline, logging decisions; the decision log."""
    import polars as pl

    from ltrr.runtime.pipeline import Pipeline
    from ltrr.types import Query

    state = fresh_state(base, work, None)
    plan = state_plan(base, state)
    texts = [json.loads(line)["query"] for line in QUERIES.read_text().splitlines()
             if line.strip()]
    users = pl.read_parquet(PLAYS, columns=["user_id"])["user_id"].unique().sort()
    users = [str(u) for u in users.to_list()]
    rng = random.Random(seed)
    queries = [Query(f"bench-{seed}-{i:06d}", texts[i % len(texts)], rng.choice(users))
               for i in range(n)]
    t = perf_counter()
    with Pipeline(plan) as p:
        for i, batch in enumerate(c.chunks(queries, 250)):
            p.run_batch(batch)
            if (i + 1) % 20 == 0:
                c.log(f"  {(i + 1) * 250} queries, {perf_counter() - t:.0f} s")
    (state / "decisions").rename(work / "decisions")
    shutil.rmtree(state)
    return work / "decisions"


def make_events(decisions: Path, catalog_ids: list[str], n: int, seed: int) -> list[dict]:
    """About ``n`` events answering the logged decisions (see the module docstring)."""
    import polars as pl

    dec = (pl.scan_parquet(str(decisions / "*.parquet"))
           .select("request_id", "query", "user_id", "timestamp",
                   pl.col("ranking").list.eval(pl.element().struct.field("entity_id"))
                   .alias("ranked"))
           .collect().rows())
    rng = random.Random(seed)
    types, weights = list(TYPES), list(TYPES.values())
    events: list[dict] = []
    per = n / len(dec)
    while len(events) < n:
        rid, query, user, ts, ranked = dec[rng.randrange(len(dec))]
        r = rng.random()
        if r < 0.10:                                   # organic: no request
            ev = {"user_id": user, "entity_id": rng.choice(catalog_ids),
                  "type": rng.choices(types, weights)[0], "query": query,
                  "timestamp": round(ts + rng.uniform(0, 600), 3)}
        elif r < 0.15 and events:                      # an exact duplicate of an earlier one
            ev = dict(events[rng.randrange(len(events))])
        else:
            if not ranked:
                continue
            pos = min(int(rng.expovariate(0.4)), len(ranked) - 1)
            ev = {"request_id": rid, "user_id": user, "entity_id": ranked[pos],
                  "type": rng.choices(types, weights)[0], "position": pos + 1,
                  "timestamp": round(ts + rng.uniform(0, 600), 3)}
        if "event_id" not in ev and rng.random() >= 0.10:     # ~10% derive their id
            ev = {"event_id": f"ev-{len(events):07d}", **ev}
        events.append(ev)
    c.log(f"{len(events)} events for {len(dec)} decisions (~{per:.1f} per decision)")
    return events


def write_inputs(events: list[dict], work: Path) -> tuple[Path, Path]:
    import polars as pl

    jsonl = work / "events.jsonl"
    jsonl.write_text("".join(json.dumps(e) + "\n" for e in events))
    cols = ["event_id", "request_id", "user_id", "entity_id", "type", "position",
            "timestamp", "query"]
    frame = pl.DataFrame([{k: e.get(k) for k in cols} for e in events],
                         schema={"event_id": pl.String, "request_id": pl.String,
                                 "user_id": pl.String, "entity_id": pl.String,
                                 "type": pl.String, "position": pl.Int64,
                                 "timestamp": pl.Float64, "query": pl.String})
    parquet = work / "events.parquet"
    frame.write_parquet(parquet)
    return jsonl, parquet


def big_log(work: Path, size: int, seed: int) -> Path:
    """An event log folder with ``size`` unrelated events, in parts of 100,000."""
    import polars as pl

    from ltrr.feedback.events import EventLog

    folder = work / f"events-{size}"
    if folder.is_dir() and folder.joinpath("DONE").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    log = EventLog(folder)
    step = 100_000
    for start in range(0, size, step):
        m = min(step, size - start)
        i = pl.int_range(start, start + m, eager=True)
        log.append_frame(pl.DataFrame({
            "event_id": "old-" + i.cast(pl.String),
            "request_id": "old-req-" + (i // 5).cast(pl.String),
            "user_id": "u" + (i % 1892).cast(pl.String),
            "entity_id": (i % 17632 + 1).cast(pl.String)}).with_columns(
            type=pl.lit("click"), position=pl.lit(1, pl.Int32),
            timestamp=(1.7e9 + i).cast(pl.Float64), query=pl.lit(None, pl.String)))
    (folder / "DONE").write_text("")
    return folder


def floor_rate(path: Path, n: int) -> float:
    """polars read + write_parquet of ``path``: events/s."""
    import polars as pl

    t = perf_counter()
    frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_ndjson(path)
    frame.write_parquet(io.BytesIO(), compression="zstd")
    return n / (perf_counter() - t)


def learner_ids(plan) -> list[str]:
    from ltrr.components import Learner

    return [n.id for n in plan.nodes if issubclass(n.registration.cls, Learner)]


def main() -> int:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=20_000)
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--log-size", type=int, default=1_000_000)
    p.add_argument("--work", type=Path, help="keep the set-up (decisions, events) here and "
                   "reuse it on the next run")
    p.add_argument("--profile", action="store_true",
                   help="cProfile one JSONL ingestion and print it to stderr")
    args = p.parse_args()
    started = perf_counter()

    import polars as pl

    from ltrr.compiler import load_plan
    from ltrr.feedback.ingest import ingest_file
    from ltrr.state import atomic_write_json

    base = load_plan(SPEC)
    index = c.ensure_music_index(base)
    c.log(f"indexes: {index}")
    keep = args.work is not None
    work = args.work or Path(tempfile.mkdtemp(prefix="ltrr-bench-feedback-"))
    work.mkdir(parents=True, exist_ok=True)
    tag = f"{args.queries}-{args.events}-{args.seed}"
    try:
        setup = work / f"setup-{tag}"
        if not (setup / "DONE").exists():
            shutil.rmtree(setup, ignore_errors=True)
            setup.mkdir()
            c.log(f"set-up: {args.queries} queries through Pipeline.run_batch")
            t = perf_counter()
            decisions = serve(base, setup, args.queries, args.seed)
            serve_s = perf_counter() - t
            ids = [str(x) for x in pl.read_parquet(
                base.spec.resolve(base.model.catalog.path),
                columns=[base.model.catalog.id])[base.model.catalog.id].to_list()]
            write_inputs(make_events(decisions, ids, args.events, args.seed), setup)
            (setup / "DONE").write_text(json.dumps({"serve_s": round(serve_s, 1)}))
        decisions = setup / "decisions"
        jsonl, parquet = setup / "events.jsonl", setup / "events.parquet"
        n = pl.read_parquet(parquet, columns=["type"]).height
        states = work / "states"
        shutil.rmtree(states, ignore_errors=True)
        states.mkdir()
        learners = learner_ids(base)

        if args.profile:
            import cProfile
            import pstats

            plan = state_plan(base, fresh_state(base, states, decisions))
            prof = cProfile.Profile()
            prof.enable()
            ingest_file(plan, jsonl)
            prof.disable()
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(40)
            c.log(buf.getvalue())

        bigl = big_log(work, args.log_size, args.seed) if args.log_size else None
        runs: dict[str, dict[str, list]] = {}
        for r in range(args.runs):
            for fmt, path in (("jsonl", jsonl), ("parquet", parquet)):
                res = runs.setdefault(fmt, {"ingest": [], "replay": [], "floor": [],
                                            "big": [], "reports": []})
                res["floor"].append(floor_rate(path, n))
                plan = state_plan(base, fresh_state(base, states, decisions))
                t = perf_counter()
                report = ingest_file(plan, path)
                s = perf_counter() - t
                res["ingest"].append(n / s)
                res["reports"].append(report)
                t = perf_counter()
                again = ingest_file(plan, path)
                res["replay"].append(n / (perf_counter() - t))
                assert again["new"] == 0 and not again["learners"], again
                msg = (f"run {r + 1} {fmt}: {n / s:,.0f} events/s ({s:.2f} s, "
                       f"{report['new']} new); replay {res['replay'][-1]:,.0f} events/s")
                if bigl is not None:
                    state = fresh_state(base, states, decisions)
                    shutil.copytree(bigl, state / "events")
                    (state / "events" / "DONE").unlink()
                    parts = sorted(p.name for p in (state / "events").glob("part-*.parquet"))
                    for node in learners:
                        atomic_write_json(state / f"{node}.learned" / "cursor.json",
                                          {"parts": parts})
                    plan = state_plan(base, state)
                    t = perf_counter()
                    big = ingest_file(plan, path)
                    res["big"].append(n / (perf_counter() - t))
                    assert big["new"] == report["new"], (big["new"], report["new"])
                    msg += f"; into {args.log_size:,} logged {res['big'][-1]:,.0f} events/s"
                c.log(msg)
                for d in sorted(states.iterdir()):
                    shutil.rmtree(d, ignore_errors=True)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)

    metrics, details = [], {"events_in_file": n, "decisions": args.queries,
                            "learners": learners, "index": index, "formats": {}}
    for fmt, res in runs.items():
        rate, floor = c.median(res["ingest"]), c.median(res["floor"])
        reader = "read_ndjson" if fmt == "jsonl" else "read_parquet"
        rep = res["reports"][0]
        stages = _stages(res["reports"])
        metrics.append(c.metric(
            f"feedback ingest {fmt}, end to end (median)", rate, "events/s",
            target=f">= {TARGET:,.0f} events/s", passed=rate >= TARGET, baseline=floor,
            baseline_name=f"polars {reader} + write_parquet",
            note=f"{n} events, {rep['new']} new; stages (s): " + ", ".join(
                f"{k} {v:.2f}" for k, v in stages.items())))
        metrics.append(c.metric(f"feedback replay {fmt}, nothing new (median)",
                                c.median(res["replay"]), "events/s", baseline=rate,
                                baseline_name="first ingestion"))
        if res["big"]:
            metrics.append(c.metric(
                f"feedback ingest {fmt} into a log of {args.log_size:,} events (median)",
                c.median(res["big"]), "events/s", baseline=rate,
                baseline_name="into an empty log"))
        details["formats"][fmt] = {
            "ingest_events_per_s": [round(x) for x in res["ingest"]],
            "replay_events_per_s": [round(x) for x in res["replay"]],
            "big_log_events_per_s": [round(x) for x in res["big"]],
            "floor_events_per_s": [round(x) for x in res["floor"]],
            "stages_median_s": stages, "report": rep}
    c.emit(c.result("feedback", "Feedback ingestion throughput (music-bandit)", metrics,
                    details, started=started), args.out)
    return 0


def _stages(reports: list[dict]) -> dict[str, float]:
    """Median seconds per stage over runs, from the reports' ``seconds``."""
    keys: dict[str, list[float]] = {}
    for rep in reports:
        for k, v in _flat(rep.get("seconds", {})).items():
            keys.setdefault(k, []).append(v)
    return {k: round(c.median(v), 3) for k, v in keys.items()}


def _flat(d: dict, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float)):
            out[f"{prefix}{k}"] = float(v)
    return out


if __name__ == "__main__":
    sys.exit(main())
