"""Scale: the music pipeline on the Last.fm catalog ×1, ×10, ×100, and event logs of 10⁶
and 10⁸ events.

For each factor (``--factors``, default 1,10,100) the data of ``scale_data.py`` and
``pipelines/music.yaml`` with its paths pointed at them, twice up to ``--dense-max``
(default ×10): without the dense arm (its 20 candidates go to the lexical arm) — the
series whose growth is fitted — and as it is, with the dense arm, whose encoding
dominates the index time. Each step runs in a fresh process, so its peak RSS is its own:

* **index**: ``index_plan`` — wall time, peak RSS, seconds per arm, the dense arm's
  encoding rate (texts per second; the time to encode ×F projected from it);
* **serve**: ``Pipeline`` open time, RSS after open, ``--queries`` single queries (after
  50 of warm-up; texts drawn like bench_overhead's, by this script's own process so that
  the measured one reads only what the pipeline reads) — p50 / p90 / p99 per query, and
  the memory after them: RSS, its anonymous part (heaps: what each serving worker holds
  for itself) and the resident size per worker when two workers map the same index
  (anonymous + file-backed / 2).

Then, for each ``--events`` size, an event log of that many events (parts of 10⁶) and the
time to append a batch of 10,000 new events to it (``EventLog.append_new``: ids checked
against the log), median of 5 batches. Each cost's growth is fitted as an exponent:
``cost ∝ entities^k`` between consecutive factors (k = 1 is linear).

Targets (issue 16) at ×100 without the dense arm: open < 5 s, memory per serving worker
with two workers sharing the maps < 1 GB, p50 < 5 ms, p99 < 30 ms, index < 120 s;
appending 10,000 events to 10⁸ < 50 ms.

    .venv/bin/python benchmarks/bench_scale.py [--factors 1,10,100] [--events 1e6,1e8]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as c

TARGETS = {"open_s": 5.0, "rss_mb": 1024.0, "p50_ms": 5.0, "p99_ms": 30.0,
           "index_s": 120.0, "append_ms": 50.0}
BATCH = 10_000
PART = 1_000_000


def rss_mb() -> float:
    """This process's resident set now (MB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def memory_mb() -> dict[str, float]:
    """This process's resident memory now: rss, uss (pages no other process maps now),
    anonymous (its heaps: what every worker holds for itself), and per worker when two
    identical workers map the same files (anonymous + file-backed / 2). A file page
    mapped by this process alone counts as private in uss, though a second worker
    mapping the same index would share it: uss overstates a worker's own memory."""
    fields = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        fields[name.rstrip(":")] = int(value) / 1024.0
    uss = fields.get("Private_Clean", 0.0) + fields.get("Private_Dirty", 0.0)
    rss = fields.get("Rss", rss_mb())
    anon = fields.get("Anonymous", uss)
    return {"rss": rss, "uss": uss, "anonymous": anon,
            "two_workers": anon + (rss - anon) / 2.0}


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --- steps, each run in its own process ------------------------------------------------------

def step_index(spec: Path) -> dict:
    from ltrr.compiler import load_plan
    from ltrr.runtime.batch import index_plan

    plan = load_plan(spec)
    t = time.perf_counter()
    report = index_plan(plan)
    return {"seconds": time.perf_counter() - t, "peak_mb": peak_mb(), "arms": report}


def step_serve(spec: Path, texts_file: Path) -> dict:
    from ltrr.compiler import load_plan
    from ltrr.runtime.pipeline import Pipeline, new_request_id
    from ltrr.types import Query

    texts = json.loads(texts_file.read_text())
    plan = load_plan(spec)
    t = time.perf_counter()
    pipeline = Pipeline(plan, log_decisions=False)
    open_s = time.perf_counter() - t
    after_open = rss_mb()
    try:
        for q in texts[:50]:
            pipeline.run(Query(new_request_id(), q))
        ms = []
        for q in texts[50:]:
            t = time.perf_counter()
            pipeline.run(Query(new_request_id(), q))
            ms.append((time.perf_counter() - t) * 1000.0)
        nodes = {k: round(v["open"] + v.get("warm", 0.0), 3)
                 for k, v in getattr(pipeline, "open_seconds", {}).items()}
        return {"open_s": open_s, "open_by_node_s": nodes,
                "rss_after_open_mb": after_open, "rss_after_mb": rss_mb(),
                "memory_mb": memory_mb(),
                "peak_mb": peak_mb(), "p50_ms": c.percentile(ms, 50),
                "p90_ms": c.percentile(ms, 90), "p99_ms": c.percentile(ms, 99),
                "queries": len(ms)}
    finally:
        pipeline.close()


def in_process(args: list[str], timeout: float) -> dict:
    """Run a step of this script in a fresh process; its JSON result."""
    done = subprocess.run([sys.executable, __file__, "--step", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=c.ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"step {args[0]} failed: {done.stderr.strip()[-1500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the spec at a scale ---------------------------------------------------------------------

def scaled_spec(files: dict[str, Path], folder: Path, dense: bool) -> Path:
    import yaml

    data = yaml.safe_load(c.MUSIC_SPEC.read_text())
    data["name"] = "music-scale"
    data["catalog"]["path"] = str(files["artists"])
    data["state_dir"] = str(folder / "state")
    alloc = data["policy"]["with"]["allocation"]
    for arm in data["arms"]:
        arm["deadline_ms"] = 600_000           # measure the arm, never drop it
        for rel in arm.get("with", {}).get("relations", []):
            rel["path"] = str(files["tag_assignments"] if rel["kind"] == "bipartite"
                              else files["plays"])
    if not dense:
        data["arms"] = [a for a in data["arms"] if a["use"] != "dense"]
        alloc["lexical"] += alloc.pop("semantic")
        data.pop("encoders", None)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "music-scale.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# --- event logs ------------------------------------------------------------------------------

def event_log_of(folder: Path, n: int) -> "object":
    """An event log of ``n`` events in parts of at most 10⁶ (ids e<i>), made once."""
    import polars as pl

    from ltrr.feedback.events import EventLog
    from ltrr.feedback.schema import EVENT_SCHEMA

    log = EventLog(folder)
    have = sum(pl.scan_parquet(p.path).select(pl.len()).collect().item()
               for p in log.pieces()) if folder.exists() else 0
    start = have
    while start < n:
        size = min(PART, n - start)
        ids = pl.int_range(start, start + size, eager=True).cast(pl.String)
        frame = pl.DataFrame({
            "event_id": "e" + ids, "request_id": "r" + ids,
            "entity_id": (pl.int_range(start, start + size, eager=True) % 17632)
            .cast(pl.String), "type": pl.Series(["click"] * size),
            "timestamp": pl.Series([1.7e9] * size, dtype=pl.Float64)})
        frame = frame.select([pl.col(k).cast(t) if k in frame.columns
                              else pl.lit(None, dtype=t).alias(k)
                              for k, t in EVENT_SCHEMA.items()])
        log.append_frame(frame)
        start += size
    return log


def build_id_index(log) -> float | None:
    """Seconds to build the log's id index from scratch (once: a log written through
    ``append_new`` keeps it up to date); None before the index existed."""
    try:
        from ltrr.feedback.id_index import IdIndex
    except ImportError:
        return None
    t = time.perf_counter()
    IdIndex(log).sync()
    return time.perf_counter() - t


def append_ms(log, n: int, batches: int = 5) -> list[float]:
    """Milliseconds to append each of ``batches`` batches of 10,000 new events."""
    import polars as pl

    from ltrr.feedback.schema import EVENT_SCHEMA

    out = []
    for b in range(batches):
        ids = pl.int_range(0, BATCH, eager=True).cast(pl.String)
        frame = pl.DataFrame({"event_id": f"new{n}-{b}-" + ids,
                              "entity_id": pl.Series(["1"] * BATCH),
                              "type": pl.Series(["click"] * BATCH),
                              "timestamp": pl.Series([1.7e9] * BATCH, dtype=pl.Float64)})
        frame = frame.select([pl.col(k).cast(t) if k in frame.columns
                              else pl.lit(None, dtype=t).alias(k)
                              for k, t in EVENT_SCHEMA.items()])
        t = time.perf_counter()
        added = log.append_new(frame)
        out.append((time.perf_counter() - t) * 1000.0)
        assert added.height == BATCH
    return out


# --- growth ----------------------------------------------------------------------------------

def worker_mb(serve: dict) -> float:
    """Resident memory per serving worker when two share the maps (RSS before issue 16's
    measurements of it)."""
    return serve.get("memory_mb", {}).get("two_workers", serve["rss_after_mb"])


def exponent(x0: float, y0: float, x1: float, y1: float) -> float | None:
    """k in y ∝ x^k through two points (None when a value is not positive)."""
    if min(x0, y0, x1, y1) <= 0 or x0 == x1:
        return None
    return math.log(y1 / y0) / math.log(x1 / x0)


def main() -> int:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--factors", default="1,10,100")
    p.add_argument("--dense-max", type=int, default=10,
                   help="the dense arm is indexed and served up to this factor")
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--events", default="1e6,1e8", help="event log sizes ('' for none)")
    p.add_argument("--work", type=Path, default=None,
                   help="folder for the data and state (default: a temporary one)")
    p.add_argument("--step", nargs="+", help=argparse.SUPPRESS)   # a step's own process
    args = p.parse_args()
    if args.step:
        kind, spec = args.step[0], Path(args.step[1])
        out = step_index(spec) if kind == "index" else step_serve(spec, Path(args.step[2]))
        print(json.dumps(out, default=str))
        return 0

    import scale_data

    started = time.perf_counter()
    factors = [int(f) for f in args.factors.split(",") if f]
    sizes = [int(float(s)) for s in args.events.split(",") if s]
    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="ltrr-scale-")
        work = Path(tmp.name)
    else:
        work = args.work
    rows: dict[tuple[int, bool], dict] = {}
    try:
        for f in factors:
            folder = work / f"x{f}"
            c.log(f"×{f}: data")
            t = time.perf_counter()
            files = scale_data.write(f, folder / "data")
            gen_s = time.perf_counter() - t
            for dense in ((False, True) if f <= args.dense_max else (False,)):
                key = (f, dense)
                spec = scaled_spec(files, folder / ("dense" if dense else "static"), dense)
                c.log(f"×{f}{' with the dense arm' if dense else ''}: index")
                index = in_process(["index", str(spec)], timeout=7200)
                c.log(f"×{f}: index {index['seconds']:.1f} s; serve")
                texts = folder / "queries.json"
                if not texts.exists():
                    from ltrr.catalog import Catalog

                    texts.write_text(json.dumps(c.music_queries(
                        Catalog(files["artists"], "artist_id"), 50 + args.queries, args.seed)))
                serve = in_process(["serve", str(spec), str(texts)], timeout=3600)
                arms = {k: v for k, v in index["arms"].items() if isinstance(v, dict)}
                sem = arms.get("semantic") or {}
                rows[key] = {"entities": 17632 * f, "data_seconds": round(gen_s, 1),
                             "dense": dense, "index": index, "serve": serve,
                             "arm_seconds": {k: v.get("seconds") for k, v in arms.items()},
                             "encode_docs_per_second": sem.get("docs_per_second")}
                c.log(f"×{f}: open {serve['open_s']:.1f} s, p50 {serve['p50_ms']:.1f} ms, "
                      f"RSS {serve['rss_after_mb']:.0f} MB")
        events: dict[int, dict] = {}
        for n in sizes:
            c.log(f"event log of {n:,}")
            t = time.perf_counter()
            log = event_log_of(work / f"events-{n}", n)
            made = time.perf_counter() - t
            t = time.perf_counter()
            index_s = build_id_index(log)
            ms = append_ms(log, n)
            events[n] = {"append_ms": ms, "median_ms": c.median(ms),
                         "made_seconds": round(made, 1), "id_index_seconds": index_s}
    finally:
        if tmp is not None:
            tmp.cleanup()

    metrics = []
    for (f, dense), r in rows.items():
        s = r["serve"]
        at = f"×{f} ({r['entities']:,} entities{', with the dense arm' if dense else ''})"
        top = f == max(factors) and not dense and f >= 100
        metrics += [
            c.metric(f"{at}: ltrr index", r["index"]["seconds"], "s",
                     target=f"< {TARGETS['index_s']:.0f} s" if top else None,
                     passed=r["index"]["seconds"] < TARGETS["index_s"] if top else None,
                     note="per arm: " + ", ".join(f"{k} {v:.1f} s" for k, v in
                                                  r["arm_seconds"].items() if v is not None)),
            c.metric(f"{at}: index peak RSS", r["index"]["peak_mb"], "MB"),
            c.metric(f"{at}: Pipeline open", s["open_s"], "s",
                     target=f"< {TARGETS['open_s']:.0f} s" if top else None,
                     passed=s["open_s"] < TARGETS["open_s"] if top else None,
                     note=("per node (open + warm; the catalog counted in its first "
                           "reader): " + ", ".join(f"{k} {v:.1f} s" for k, v in
                                                   s["open_by_node_s"].items() if v >= 0.05))
                     if s.get("open_by_node_s") else None),
            c.metric(f"{at}: RSS after open + {s['queries']} queries", s["rss_after_mb"], "MB",
                     note=f"after open {s['rss_after_open_mb']:.0f} MB"
                     + (f"; anonymous {s['memory_mb']['anonymous']:.0f} MB"
                        if "anonymous" in s.get("memory_mb", {}) else "")),
            c.metric(f"{at}: memory per worker, two workers sharing the maps",
                     worker_mb(s), "MB",
                     target=f"< {TARGETS['rss_mb']:.0f} MB" if top else None,
                     passed=worker_mb(s) < TARGETS["rss_mb"] if top else None,
                     note="anonymous + file-backed / 2 after the queries"),
            c.metric(f"{at}: p50 per query", s["p50_ms"], "ms",
                     target=f"< {TARGETS['p50_ms']:.0f} ms" if top else None,
                     passed=s["p50_ms"] < TARGETS["p50_ms"] if top else None,
                     note=f"p90 {s['p90_ms']:.1f} ms"),
            c.metric(f"{at}: p99 per query", s["p99_ms"], "ms",
                     target=f"< {TARGETS['p99_ms']:.0f} ms" if top else None,
                     passed=s["p99_ms"] < TARGETS["p99_ms"] if top else None),
        ]
        if r["encode_docs_per_second"]:
            rate = r["encode_docs_per_second"]
            metrics.append(c.metric(
                f"{at}: dense encoding rate", rate, "texts/s",
                note=f"projected: ×100 {17632 * 100 / rate / 60:.0f} min, ×1000 "
                     f"{17632 * 1000 / rate / 3600:.1f} h on this machine"))
    growth = {}
    for a, b in zip(factors, factors[1:]):      # the static-arm pipeline at every factor
        ra, rb = rows[(a, False)], rows[(b, False)]
        g = {name: exponent(ra["entities"], get(ra), rb["entities"], get(rb))
             for name, get in (("index_s", lambda r: r["index"]["seconds"]),
                               ("index_peak_mb", lambda r: r["index"]["peak_mb"]),
                               ("open_s", lambda r: r["serve"]["open_s"]),
                               ("rss_mb", lambda r: r["serve"]["rss_after_mb"]),
                               ("worker_mb", lambda r: worker_mb(r["serve"])),
                               ("p50_ms", lambda r: r["serve"]["p50_ms"]),
                               ("p99_ms", lambda r: r["serve"]["p99_ms"]))}
        growth[f"x{a}-x{b}"] = g
        metrics.append(c.metric(
            f"growth ×{a} → ×{b}: exponent of Pipeline open", g["open_s"], "",
            note=", ".join(f"{k} {v:.2f}" for k, v in g.items() if v is not None)
            + " (cost ∝ entities^k)", digits=2))
    for n, e in events.items():
        top = n == max(sizes) and n >= 10 ** 8
        metrics.append(c.metric(
            f"event log of {n:,}: append 10,000 new events (median of 5)", e["median_ms"], "ms",
            target=f"< {TARGETS['append_ms']:.0f} ms" if top else None,
            passed=e["median_ms"] < TARGETS["append_ms"] if top else None,
            note=", ".join(f"{x:.0f}" for x in e["append_ms"]) + " ms"
            + (f"; the id index was built once first in {e['id_index_seconds']:.1f} s"
               if e.get("id_index_seconds") is not None else "")))
    if len(events) > 1:
        (n0, e0), (n1, e1) = list(events.items())[:2]
        k = exponent(n0, e0["median_ms"], n1, e1["median_ms"])
        metrics.append(c.metric("growth of the append with the log's size: exponent", k, "",
                                digits=2, note=f"{n0:,} → {n1:,} events"))
    details = {"runs": {f"x{f}{'-dense' if d else ''}": r for (f, d), r in rows.items()},
               "events": events, "growth": growth, "queries": args.queries}
    c.emit(c.result("scale", "the music pipeline ×1/×10/×100 and event logs to 10⁸", metrics,
                    details, started=started), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
