"""`ltrr serve` under load: client-measured latency and throughput of /search over HTTP.

Starts ``ltrr serve`` on a copy of ``pipelines/music-serve.yaml`` (written beside it,
removed afterwards) whose state folder is fresh: the built indexes are linked in, so
logs and learned state start empty (the spec is indexed first if needed). A separate
load-generator process drives it (asyncio on uvloop, raw HTTP/1.1 over keep-alive
connections: the leanest client, as it competes with the server for the same 2 cores),
closed loop: each of 20 clients sends its next request as soon as the previous answer
arrived.

Traffic: the spec caches slotter and arm results (``cache:``), so cycling a small fixed
query set would turn every search into a cache hit after warm-up. Instead, before the
server starts, ``--traffic-sessions`` (default 250,000) sessions are sampled from the
project's Last.fm user model (``ltrr_plugins.simulators.lastfm``, seed ``--seed`` + 1000,
not the pre-training seed) and written as JSONL (``{"query", "user_id"}``): Last.fm
listeners looking for artists they play, with exact names, misspelled names, partial
names, tags, "like X" queries and vague tag-based queries, the head artists coming back
as they do in real traffic. All clients take the next query of that one stream (a shared
position), so the server sees it in arrival order, each search with its ``user_id`` (the
ranker's personal features see real users) and a unique request id. Each scenario
continues where the previous one's longer run stopped; past the stream's end it wraps
around, and those repeats-by-wrap are counted (0 with the default size).

Two variants of the spec: ``cached`` (as it is: slotter and arm result caches) and
``uncached`` (every ``cache:`` removed — what a stream without repeats costs). Each
scenario of each variant runs on a server started for it, on its own copy of the
pre-trained state: caches start cold and no scenario inherits another's learning. Both
variants of a scenario take the same slice of the stream. Each run starts with
``--warmup`` unmeasured seconds (30 s: the JVM's JIT compiler needs about that long under
full load to compile Lucene's hot paths):

* baseline — ``GET /health`` at the same concurrency, once, on the first server: the HTTP
  floor (uvicorn, FastAPI, the middleware) with no pipeline work;
* search — ``POST /search`` with the next queries of the stream;
* mixed — the same, plus one ``POST /feedback`` (a click on the first result of an
  earlier search, by request id) after every 10 searches: the event log's fsync and
  the background learner compete with the searches. Search latency is reported.

Reported per scenario and variant: p50 / p99 latency and search throughput (queries/s) as
the clients measured them, failed requests (non-2xx, connection errors), answers that
left an arm out (dropped by its deadline or failing: ``ltrr_searches_degraded_total``,
by arm in the notes) — a separate count, target 0, as such answers are worse than the
pipeline's —, the load generator's and the server's CPU share, and the server's batch
statistics from ``/metrics``. Targets (search, both variants): p50 < 20 ms, p99 < 60 ms
at 20 clients. Cache effectiveness (cached variant): per node, the hit rate from
``/metrics`` beside the slice's repeat share (the share of its queries whose text came
earlier in the same slice: the ceiling of a text-keyed cache that started cold).

Against an earlier commit (``--against``, default: the last full run's commit from
``benchmarks/results/latest.json``, or ``HEAD~1``): right after each search scenario, a
server running that commit's ``src`` (a temporary ``git worktree``, the same interpreter,
spec copy and pre-trained state) takes the same slice of the stream. Target: search p50
and p99 at most 10% above that commit's, measured minutes apart on the same machine.

Throughput baseline, like for like: ``Pipeline.run_batch`` (no HTTP) in as many
processes at once as the server has workers, each on its own slice of the stream after
the served ones, rates summed, per variant.

    .venv/bin/python benchmarks/bench_serve.py [--clients 20] [--duration 20]
        [--traffic-sessions 250000] [--out FILE]
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as c

SPEC = c.ROOT / "pipelines" / "music-serve.yaml"
TRAFFIC_SEED_OFFSET = 1000          # the stream's seed: --seed + this (pre-training: --seed)
TARGET_P50_MS = 20.0
TARGET_P99_MS = 60.0
TARGET_VS_REFERENCE = 1.10          # search p50/p99 at most 10% above the reference commit's
FLOOR_SLICE = 50_000                # stream positions between two pipeline-alone processes
_DROPPED_RE = re.compile(r'^ltrr_arms_dropped_total\{node="([^"]+)",reason="([^"]+)"\}$')


# --------------------------------------------------------------------------- traffic

def write_traffic(spec: Path, path: Path, sessions: int, seed: int) -> tuple[list[str], dict]:
    """Sample ``sessions`` sessions of the Last.fm user model on ``spec`` (seeded by
    ``seed``) and write them to ``path`` as JSONL ``{"query", "user_id"}`` in order.
    Returns the query texts and a description of the stream."""
    from collections import Counter

    from ltrr.compiler import load_plan
    from ltrr.simulate.engine import make_user_model, sample_sessions

    t = time.perf_counter()
    plan = load_plan(spec)
    model = make_user_model(plan, "lastfm", {})
    opened = time.perf_counter() - t
    stream = sample_sessions(model, sessions, seed)
    sampled = time.perf_counter() - t - opened
    with path.open("w", encoding="utf-8") as f:
        for s in stream:
            f.write(json.dumps({"query": s.text, "user_id": s.user_id}, ensure_ascii=False)
                    + "\n")
    texts = [s.text for s in stream]
    info = {"sessions": sessions, "seed": seed, "user_model": "lastfm",
            "sample_seconds": round(sampled, 2), "model_open_seconds": round(opened, 2),
            "total_seconds": round(time.perf_counter() - t, 2),
            "distinct_texts": len(set(texts)), "distinct_users": len({s.user_id for s in stream}),
            "repeat_share": round(repeat_share(texts, 0, len(texts)), 4),
            "query_types": dict(Counter(s.type for s in stream).most_common())}
    c.log(f"traffic: {sessions} Last.fm sessions (seed {seed}) sampled in {sampled:.1f} s "
          f"(model opened in {opened:.1f} s): {info['distinct_texts']} distinct texts, "
          f"{info['distinct_users']} users, repeat share {info['repeat_share']:.0%}; "
          + ", ".join(f"{k} {v}" for k, v in info["query_types"].items()))
    return texts, info


def read_traffic(path: Path) -> list[tuple[str, str | None]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            doc = json.loads(line)
            out.append((doc["query"], doc.get("user_id")))
    return out


def repeat_share(texts: list[str], start: int, end: int, origin: int = 0) -> float | None:
    """The share of stream positions in ``[start, end)`` whose text already came at an
    earlier position, counting from ``origin`` (positions past the stream's end wrap
    around: ``texts[p % len(texts)]``). None for an empty range."""
    if end <= start:
        return None
    seen: set[str] = set()
    repeats = 0
    n = len(texts)
    for p in range(origin, end):
        text = texts[p % n]
        if p >= start and text in seen:
            repeats += 1
        seen.add(text)
    return repeats / (end - start)


_CACHE_RE = re.compile(r'^ltrr_cache_(hits|misses)_total\{node="([^"]+)"\}$')


def cache_counts(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """node → {"hits", "misses"} from a scrape of ``/metrics``."""
    out: dict[str, dict[str, float]] = {}
    for name, value in metrics.items():
        m = _CACHE_RE.match(name)
        if m:
            out.setdefault(m.group(2), {"hits": 0.0, "misses": 0.0})[m.group(1)] = value
    return out


def hit_rates(before: dict[str, dict[str, float]],
              after: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    """node → hits, misses and hit rate between two snapshots of cache counts."""
    out = {}
    for node, a in after.items():
        b = before.get(node, {"hits": 0.0, "misses": 0.0})
        hits, misses = a["hits"] - b["hits"], a["misses"] - b["misses"]
        out[node] = {"hits": int(hits), "misses": int(misses),
                     "hit_rate": round(hits / (hits + misses), 4) if hits + misses else None}
    return out


def _rates_text(rates: dict[str, dict[str, Any]]) -> str:
    return ", ".join(f"{node} {100 * r['hit_rate']:.0f}%" for node, r in rates.items()
                     if r["hit_rate"] is not None)


# --------------------------------------------------------------------------- load generator

async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    body = await reader.readexactly(int(m.group(1))) if m else b""
    return status, body


def _post(path: str, payload: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload


async def _client(i: int, host: str, port: int, mode: str,
                  stream: list[tuple[str, str | None]], cursor: dict[str, int],
                  stop_at: float, measure_from: float, feedback_every: int,
                  out: dict[str, Any]) -> None:
    from time import perf_counter

    reader = writer = None
    n = 0
    lat_search, lat_feedback = out["search"], out["feedback"]
    health = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    pending_click: bytes | None = None
    while perf_counter() < stop_at:
        if writer is None:
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                out["connection_errors"] += 1
                await asyncio.sleep(0.05)
                continue
        kind = "search"
        if mode == "health":
            request, kind = health, "health"
        elif pending_click is not None:
            request, kind, pending_click = pending_click, "feedback", None
        else:
            # the next query of the one shared stream (no await between taking the
            # position and timing the request: positions are in sending order)
            pos = cursor["next"]
            cursor["next"] = pos + 1
            text, user = stream[pos % len(stream)]
            payload = {"query": text, "request_id": f"b{pos}"}   # the position: unique
            if user is not None:
                payload["user_id"] = user
            request = _post("/search", json.dumps(payload).encode())
        n += 1
        t = perf_counter()
        if kind == "search" and mode != "health" and out["measure_start"] is None \
                and t >= measure_from:
            out["measure_start"] = pos
        try:
            writer.write(request)
            status, body = await _read_response(reader)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            out["connection_errors"] += 1
            writer.close()
            reader = writer = None
            continue
        dt = (perf_counter() - t) * 1000.0
        if status >= 300:
            out["errors"] += 1
            out.setdefault("error_samples", []).append(f"{status} {body[:200]!r}")
        if t < measure_from:
            continue
        if kind == "feedback":
            lat_feedback.append(dt)
        else:
            lat_search.append(dt)
        if mode == "mixed" and kind == "search" and n % feedback_every == 0 and status == 200:
            doc = json.loads(body)
            entity = doc["results"][0]["entity_id"] if doc["results"] else "289"
            event = {"event_id": f"{doc['request_id']}-click", "request_id": doc["request_id"],
                     "entity_id": entity, "type": "click", "position": 1}
            if user is not None:
                event["user_id"] = user
            pending_click = _post("/feedback", json.dumps({"events": [event]}).encode())
    if writer is not None:
        writer.close()


def client_main(args) -> int:
    """The load generator (run as its own process): prints its measurements as JSON."""
    import uvloop

    stream = read_traffic(args.traffic) if args.traffic else [("", None)]
    cursor = {"next": args.start}
    out: dict[str, Any] = {"search": [], "feedback": [], "errors": 0, "connection_errors": 0,
                           "measure_start": None}

    async def run() -> None:
        from time import perf_counter

        start = perf_counter()
        measure_from = start + args.warmup
        stop_at = measure_from + args.duration
        await asyncio.gather(*[_client(i, args.host, args.port, args.mode, stream, cursor,
                                       stop_at, measure_from, args.feedback_every, out)
                               for i in range(args.clients)])

    cpu0, wall0 = os.times(), time.perf_counter()
    uvloop.run(run())
    cpu1 = os.times()
    wall = time.perf_counter() - wall0
    out["cpu_s"] = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    out["wall_s"] = wall
    out["measured_s"] = args.duration
    out["error_samples"] = out.get("error_samples", [])[:5]
    out["start"], out["end"] = args.start, cursor["next"]       # stream positions taken
    if out["measure_start"] is None:
        out["measure_start"] = cursor["next"]
    sys.stdout.write(json.dumps(out))
    return 0


# --------------------------------------------------------------------------- pipeline floor

def floor_main(args) -> int:
    """The pipeline alone (run as its own process): ``Pipeline.run_batch`` in batches of
    ``--batch`` for ``--duration`` s, no HTTP, on the traffic stream from position
    ``--start`` on (wrapping around past its end); then one query at a time, then in
    batches again with decision logging. Both pipelines are warmed up on the same
    queries; each phase reports its caches' hit rates and the share of its queries its
    pipeline had already seen (the ceiling of those hit rates)."""
    from time import perf_counter

    from ltrr.compiler import load_plan
    from ltrr.runtime.pipeline import Pipeline
    from ltrr.types import Query

    stream = read_traffic(args.traffic)
    plan = load_plan(args.spec)
    pipeline = Pipeline(plan, log_decisions=False)
    logged = Pipeline(plan, log_decisions=True)       # the same, logging as usual
    seen: dict[int, set[str]] = {id(pipeline): set(), id(logged): set()}
    pos = args.start

    def batch(size: int) -> list:
        nonlocal pos
        out = []
        for _ in range(size):
            text, user = stream[pos % len(stream)]
            out.append(Query(f"f{pos}", text, user))
            pos += 1
        return out

    def counts(pipe: Pipeline) -> dict[str, dict[str, float]]:
        return {node: {"hits": cache.hits, "misses": cache.misses}
                for node, cache in pipe.caches.items()}

    def repeats(pipe: Pipeline, queries: list) -> int:
        """How many of ``queries`` ``pipe`` has seen before (then it has seen them all)."""
        known = seen[id(pipe)]
        n = sum(q.text in known for q in queries)
        known.update(q.text for q in queries)
        return n

    try:
        stop = perf_counter() + args.warmup
        while perf_counter() < stop:
            queries = batch(args.batch)
            for pipe in (pipeline, logged):
                repeats(pipe, queries)
                pipe.run_batch(queries)
        out: dict[str, Any] = {"start": args.start, "warmup_queries": pos - args.start}
        for size, key, pipe in ((args.batch, "batch", pipeline), (1, "single", pipeline),
                                (args.batch, "batch_logged", logged)):
            lat, done, repeated = [], 0, 0
            nodes: dict[str, float] = {}
            caches0 = counts(pipe)
            cpu0, t0 = os.times(), perf_counter()
            stop = t0 + (args.duration if size > 1 else args.duration / 2)
            while perf_counter() < stop:
                queries = batch(size)
                repeated += repeats(pipe, queries)
                t = perf_counter()
                decisions = pipe.run_batch(queries)
                lat.append((perf_counter() - t) * 1000.0)
                done += size
                for node, ms in decisions[0].timings_ms.items():   # per query of the batch
                    nodes[node] = nodes.get(node, 0.0) + ms * size
            wall, cpu1 = perf_counter() - t0, os.times()
            nodes.pop("batch_size", None)
            out[key] = {"batch_size": size, "queries": done, "queries_per_s": done / wall,
                        "batch_ms": c.summary(lat, 3),
                        "node_ms_per_query": {n: round(v / done, 3) for n, v in nodes.items()},
                        "cpu_share_of_one_core": ((cpu1.user - cpu0.user)
                                                  + (cpu1.system - cpu0.system)) / wall,
                        "cache": hit_rates(caches0, counts(pipe)),
                        "repeat_share": round(repeated / done, 4) if done else None}
    finally:
        pipeline.close()
        logged.close()
    out["end"] = pos
    out["stream_sessions"] = len(stream)
    out["repeats_by_wrap"] = max(0, pos - args.start - len(stream))
    sys.stdout.write(json.dumps(out))
    return 0


def run_floor(spec: Path, batch: int, args, traffic: Path, start: int,
              processes: int) -> dict[str, Any]:
    """``processes`` pipeline-alone processes at once (one per server worker, so the
    baseline uses the machine as the server does), each on its own slice of the stream
    (``start + i * FLOOR_SLICE``); rates are summed, the rest is process 0's with the
    cache counts and repeats summed."""
    cmds = [[sys.executable, __file__, "--floor", "--spec", str(spec), "--batch", str(batch),
             "--duration", str(args.duration), "--warmup", str(args.warmup),
             "--traffic", str(traffic), "--start", str(start + i * FLOOR_SLICE)]
            for i in range(processes)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for cmd in cmds]
    outs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=args.duration * 2 + args.warmup + 300)
        if proc.returncode != 0:
            raise RuntimeError(f"pipeline floor failed: {stderr[-2000:]}")
        outs.append(json.loads(stdout))
    out = copy.deepcopy(outs[0])
    out["processes"] = processes
    out["per_process"] = outs
    for key in ("batch", "single", "batch_logged"):
        out[key]["queries_per_s"] = sum(o[key]["queries_per_s"] for o in outs)
        out[key]["queries"] = sum(o[key]["queries"] for o in outs)
        repeated = sum((o[key]["repeat_share"] or 0) * o[key]["queries"] for o in outs)
        out[key]["repeat_share"] = (round(repeated / out[key]["queries"], 4)
                                    if out[key]["queries"] else None)
        counts = {node: {kind: sum(o[key]["cache"][node][kind] for o in outs)
                         for kind in ("hits", "misses")} for node in out[key]["cache"]}
        out[key]["cache"] = hit_rates({}, counts)
    out["repeats_by_wrap"] = sum(o["repeats_by_wrap"] for o in outs)
    c.log(f"pipeline alone ({spec.name}, {processes} process(es) at once): "
          f"{out['batch']['queries_per_s']:.0f} q/s in batches of {batch} "
          f"(batch p50 {out['batch']['batch_ms']['p50']:.1f} ms), "
          f"{out['batch_logged']['queries_per_s']:.0f} q/s logging decisions, "
          f"{out['single']['queries_per_s']:.0f} q/s one at a time "
          f"(p50 {out['single']['batch_ms']['p50']:.2f} ms); ms per query in batches: "
          + ", ".join(f"{n} {v:.2f}" for n, v in out["batch"]["node_ms_per_query"].items()))
    c.log(f"pipeline alone: {out['repeats_by_wrap']} repeats by wrap; " + "; ".join(
              f"{key}: cache hits {_rates_text(out[key]['cache']) or 'none'} "
              f"(repeat share {100 * (out[key]['repeat_share'] or 0):.0f}%)"
              for key in ("batch", "single", "batch_logged")))
    return out


# --------------------------------------------------------------------------- server

def _proc_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid`` and its live children (the workers of ``--workers N``)."""
    total = 0.0
    for p in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def fresh_spec(state: Path, source: Path = SPEC, *, caches: bool = True,
               tag: str = "") -> Path:
    """A copy of ``source`` beside it (same relative paths, so the same index
    fingerprints) whose state folder is ``state``. A new ``state`` gets the original's
    built indexes linked in (logs and learned state start empty); an existing one is used
    as it is. ``caches=False`` removes every ``cache:`` (slotters and arms), which no
    fingerprint depends on. The caller deletes the copy."""
    import yaml

    from ltrr.compiler import load_plan

    data = yaml.safe_load(source.read_text())
    if not state.exists():
        plan = load_plan(source)
        c.ensure_music_index(plan)
        state.mkdir(parents=True)
        for node in plan.spec.state_dir.iterdir():
            if (node / "manifest.json").exists():
                (state / node.name).symlink_to(node, target_is_directory=True)
    data["state_dir"] = str(state)
    if not caches:
        for key in ("slotters", "arms"):
            for node in data.get(key) or []:
                node.pop("cache", None)
    path = source.with_name(f".bench-serve-{os.getpid()}{tag}.yaml")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def pretrain(spec: Path, folder: Path, sessions: int, seed: int) -> dict[str, Any]:
    """Simulate ``sessions`` Last.fm sessions on ``spec`` (their logs kept in ``folder``)
    and replay that log into ``spec``'s own state with ``ltrr train``: the server then
    starts with trained learners, as after a period of serving."""
    from ltrr.compiler import load_plan
    from ltrr.feedback.train import train
    from ltrr.simulate.engine import PolicyChoice, SimConfig
    from ltrr.simulate.sweep import simulate

    t = time.perf_counter()
    plan = load_plan(spec)
    pol = plan.model.policy
    c.log(f"pre-training: {sessions} simulated sessions, then ltrr train on their log")
    simulate(plan, "lastfm", {}, [PolicyChoice("pre", pol.use, dict(pol.with_))],
             SimConfig(sessions=sessions, seed=seed, keep_state=folder))
    report = train(plan, folder / "pre")
    ranker = (report["learners"].get("ranker") or {}).get("training")
    return {"sessions": sessions, "seconds": round(time.perf_counter() - t, 1),
            "ranker_training": ranker}


def index_with(spec: Path, source: Path) -> None:
    """``ltrr index`` on ``spec`` with another checkout's ``src`` (rebuilds only the nodes
    whose index that version reads differently)."""
    done = subprocess.run([str(c.venv_bin("ltrr")), "index", str(spec)], capture_output=True,
                          text=True, env=c.source_env(source), timeout=1800)
    if done.returncode != 0:
        raise RuntimeError("ltrr index (reference) failed: " + done.stderr[-800:])


def start_server(spec: Path, extra: list[str],
                 source: Path | None = None) -> tuple[subprocess.Popen, int]:
    """``ltrr serve`` on ``spec``; ``source`` is another checkout's ``src`` to run."""
    cmd = [str(c.venv_bin("ltrr")), "serve", str(spec), "--port", "0", *extra]
    env = None
    if source is not None:
        env = c.source_env(source)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env)
    assert proc.stderr is not None
    deadline = time.monotonic() + 180
    lines = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"listening on http://[^:]+:(\d+)", line)
        if m:
            # keep draining stderr so the server never blocks on a full pipe
            def drain() -> None:
                for _ in proc.stderr:      # type: ignore[union-attr]
                    pass
            import threading
            threading.Thread(target=drain, daemon=True).start()
            return proc, int(m.group(1))
    proc.kill()
    raise RuntimeError("ltrr serve did not start: " + "".join(lines[-20:]))


def scrape(port: int, workers: int = 1) -> dict[str, float]:
    """``/metrics``, summed over the server's workers: each answers for itself, so new
    connections are opened until every worker (``x-ltrr-worker``) has answered once."""
    import http.client

    seen: dict[str, dict[str, float]] = {}
    for _ in range(200 * workers):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            text = resp.read().decode()
            worker = resp.getheader("x-ltrr-worker", "0")
        finally:
            conn.close()
        if worker not in seen:
            seen[worker] = {}
            for line in text.splitlines():
                if line and not line.startswith("#"):
                    name, _, value = line.rpartition(" ")
                    seen[worker][name] = float(value)
        if len(seen) >= workers:
            break
    else:
        raise RuntimeError(f"only workers {sorted(seen)} of {workers} answered /metrics")
    out: dict[str, float] = {}
    for metrics in seen.values():
        for name, value in metrics.items():
            out[name] = out.get(name, 0.0) + value
    return out


def dropped_counts(metrics: dict[str, float]) -> dict[str, float]:
    """"node/reason" → arms dropped, from a scrape of ``/metrics``."""
    out = {}
    for name, value in metrics.items():
        m = _DROPPED_RE.match(name)
        if m:
            out[f"{m.group(1)}/{m.group(2)}"] = value
    return out


def run_scenario(port: int, server_pid: int, mode: str, args, traffic: Path,
                 texts: list[str], start: int) -> dict[str, Any]:
    """One scenario's load generator run on a server that has seen nothing of the
    stream, taking it from position ``start`` on; ``res["stream"]["end"]`` is where it
    stopped. Answers that left an arm out (deadline or failure) are counted from the
    server's ``/metrics``."""
    before = scrape(port, args.workers)
    cpu0 = _proc_cpu_s(server_pid)
    t0 = time.perf_counter()
    cmd = [sys.executable, __file__, "--client", "--port", str(port), "--mode", mode,
           "--clients", str(args.clients), "--duration", str(args.duration),
           "--warmup", str(args.warmup), "--feedback-every", str(args.feedback_every),
           "--traffic", str(traffic), "--start", str(start)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 120)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    wall = time.perf_counter() - t0
    server_cpu = _proc_cpu_s(server_pid) - cpu0
    after = scrape(port, args.workers)
    out = json.loads(done.stdout)
    dropped0 = dropped_counts(before)
    lat = out["search"]
    batches = after.get("ltrr_batch_size_count", 0) - before.get("ltrr_batch_size_count", 0)
    queries = after.get("ltrr_batch_size_sum", 0) - before.get("ltrr_batch_size_sum", 0)
    res = {
        "mode": mode, "requests": len(lat) + len(out["feedback"]),
        "latency_ms": c.summary(lat, 3) if lat else None,
        "feedback_latency_ms": c.summary(out["feedback"], 3) if out["feedback"] else None,
        "throughput_rps": (len(lat) + len(out["feedback"])) / out["measured_s"],
        "search_rps": len(lat) / out["measured_s"],
        "errors": out["errors"], "connection_errors": out["connection_errors"],
        "error_samples": out["error_samples"],
        "loadgen_cpu_share_of_one_core": out["cpu_s"] / out["wall_s"],
        "server_cpu_share_of_one_core": server_cpu / wall,
        "batches": batches, "mean_batch_size": queries / batches if batches else None,
        "degraded": int(after.get("ltrr_searches_degraded_total", 0)
                        - before.get("ltrr_searches_degraded_total", 0)),
        "arms_dropped": {k: int(v - dropped0.get(k, 0))
                         for k, v in dropped_counts(after).items() if v > dropped0.get(k, 0)},
    }
    end, measured = out["end"], out["measure_start"]
    if end > start:
        # the cache counts cover the whole run (warm-up too), like the first repeat share
        res["stream"] = {
            "start": start, "measure_start": measured, "end": end,
            "repeats_by_wrap": max(0, end - max(start, len(texts))),
            "repeat_share": round(repeat_share(texts, start, end, start), 4),
            "repeat_share_measured": (round(repeat_share(texts, measured, end, start), 4)
                                      if end > measured else None)}
        res["cache"] = hit_rates(cache_counts(before), cache_counts(after))
    c.log(f"{mode}: p50 {res['latency_ms']['p50']:.2f} ms, p99 {res['latency_ms']['p99']:.2f} "
          f"ms, {res['throughput_rps']:.0f} req/s, errors {res['errors']}+"
          f"{res['connection_errors']}, {res['degraded']} answers without an arm "
          f"{res['arms_dropped'] or ''}, loadgen CPU {res['loadgen_cpu_share_of_one_core']:.0%}"
          f" of a core, server {res['server_cpu_share_of_one_core']:.0%}"
          + (f", mean batch {res['mean_batch_size']:.1f}" if batches else ""))
    if "stream" in res:
        st = res["stream"]
        c.log(f"{mode}: stream positions {start}..{end} ({st['repeats_by_wrap']} repeats by "
              f"wrap), repeat share {st['repeat_share']:.0%}; cache hits "
              f"{_rates_text(res['cache']) or 'none'}")
    return res


def main() -> int:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds per scenario")
    p.add_argument("--warmup", type=float, default=30.0, help="unmeasured seconds first: "
                   "under full load on 2 cores the JVM's JIT compiler takes ~30 s to compile "
                   "Lucene's hot paths (until then they run profiled, slower); a long-running "
                   "server is past that. The first 10 s measured instead: p50 ~20 ms")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="ltrr serve --workers (default: one per core)")
    p.add_argument("--feedback-every", type=int, default=10,
                   help="mixed scenario: one feedback post per this many searches")
    p.add_argument("--server-args", default="", help="extra `ltrr serve` flags, e.g. "
                   "'--max-batch 16 --max-wait-ms 2'")
    p.add_argument("--scenarios", default="health,search,mixed",
                   help="health runs once (on the first server); search and mixed run "
                        "once per variant, each on a server started for it")
    p.add_argument("--variants", default="cached,uncached",
                   help="cached: the spec as it is; uncached: the same with every cache: "
                        "removed")
    p.add_argument("--pretrain-sessions", type=int, default=1500, help="simulated Last.fm "
                   "sessions whose log is replayed into the fresh state first (ltrr train), so "
                   "the learners — the LightGBM ranker, the memory arm — serve trained; 0: cold")
    p.add_argument("--traffic-sessions", type=int, default=250000, help="simulated Last.fm "
                   "sessions in the traffic stream (seed --seed + 1000); all scenarios and the "
                   "in-process baseline take their queries from it in order, wrapping around "
                   "(and counting the repeats) if they run past its end")
    p.add_argument("--no-floor", dest="floor_baseline", action="store_false",
                   help="skip the in-process pipeline baseline")
    p.add_argument("--against", default="auto", help="a commit whose server is measured "
                   "on the same slice right after each search scenario (its src on the same "
                   "interpreter, state and spec): auto = the last full run's commit "
                   "(benchmarks/results/latest.json), or HEAD~1 when that is HEAD; none: skip")
    p.add_argument("--spec", type=Path, default=SPEC, help="the spec to serve (default: "
                   "pipelines/music-serve.yaml); a copy with a fresh state folder is served")
    # load-generator mode (internal)
    p.add_argument("--client", action="store_true", help=__import__("argparse").SUPPRESS)
    p.add_argument("--host", default="127.0.0.1", help=__import__("argparse").SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=__import__("argparse").SUPPRESS)
    p.add_argument("--mode", default="search", help=__import__("argparse").SUPPRESS)
    p.add_argument("--floor", action="store_true", help=__import__("argparse").SUPPRESS)
    p.add_argument("--traffic", type=Path, help=__import__("argparse").SUPPRESS)
    p.add_argument("--start", type=int, default=0, help=__import__("argparse").SUPPRESS)
    p.add_argument("--batch", type=int, default=10, help="batch size of the in-process "
                   "pipeline baseline (default: 10, about what 20 closed-loop clients make)")
    args = p.parse_args()
    if args.client:
        return client_main(args)
    if args.floor:
        return floor_main(args)
    if args.traffic_sessions < 1:
        p.error("--traffic-sessions must be at least 1")

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not variants or set(variants) - {"cached", "uncached"}:
        p.error("--variants: a comma-separated subset of cached, uncached")
    modes = [m.strip() for m in args.scenarios.split(",") if m.strip()]

    started = time.perf_counter()
    reference = c.reference_commit(args.against)
    folder = Path(tempfile.mkdtemp(prefix="ltrr-bench-serve-"))
    reference_src: Path | None = None
    reference_error: str | None = None
    copies: list[Path] = []
    proc = None
    results: dict[str, dict[str, Any]] = {}
    floors: dict[str, dict[str, Any]] = {}
    starts: dict[str, float] = {}
    stops: dict[str, float] = {}
    exit_codes: dict[str, int] = {}
    try:
        master = folder / "state"
        copies.append(fresh_spec(master, args.spec.resolve()))
        pretrained = pretrain(copies[0], folder / "sim", args.pretrain_sessions, args.seed) \
            if args.pretrain_sessions else None
        if reference:
            try:
                reference_src = c.checkout(reference, folder / "reference")
            except subprocess.CalledProcessError as exc:
                reference_error = f"git worktree add failed: {exc.stderr.strip()[-500:]}"
        traffic_file = folder / "traffic.jsonl"
        texts, traffic = write_traffic(copies[0], traffic_file, args.traffic_sessions,
                                       args.seed + TRAFFIC_SEED_OFFSET)

        def spec_for(variant: str, run: str) -> Path:
            """A spec of ``variant`` on its own copy of the pre-trained state."""
            state = folder / f"state-{run}"
            shutil.copytree(master, state, symlinks=True)
            copies.append(fresh_spec(state, args.spec.resolve(),
                                     caches=variant == "cached", tag=f"-{run}"))
            return copies[-1]

        # every search scenario of every variant on a server started for it (cold
        # caches, the pre-trained state); both variants of a scenario take the same
        # slice of the stream; the next scenario goes on where the longest one stopped
        offset, health_done = 0, "health" not in modes
        for mode in [m for m in modes if m != "health"]:
            end = offset
            for variant in variants:
                run = f"{mode}-{variant}"
                spec = spec_for(variant, run)
                t = time.perf_counter()
                proc, port = start_server(spec, ["--workers", str(args.workers),
                                                 *args.server_args.split()])
                starts[run] = round(time.perf_counter() - t, 2)
                c.log(f"{run}: server pid {proc.pid} on port {port} (started in "
                      f"{starts[run]:.1f} s); {args.clients} clients, {args.duration:.0f} s")
                if not health_done:
                    results["health"] = run_scenario(port, proc.pid, "health", args,
                                                     traffic_file, texts, offset)
                    health_done = True
                results[run] = run_scenario(port, proc.pid, mode, args, traffic_file, texts,
                                            offset)
                results[run]["variant"] = variant
                end = max(end, results[run].get("stream", {}).get("end", offset))
                t = time.perf_counter()
                proc.send_signal(signal.SIGTERM)
                exit_codes[run] = proc.wait(timeout=600)   # a learning run may finish first
                stops[run] = round(time.perf_counter() - t, 2)
                proc = None
                if mode == "search" and reference_src is not None:
                    # the reference commit's server, same slice, spec and pre-trained state
                    ref_run = f"{run}@reference"
                    try:
                        ref_spec = spec_for(variant, ref_run)
                        # its own indexes where its formats differ (learned state kept)
                        index_with(ref_spec, reference_src)
                        proc, port = start_server(ref_spec,
                                                  ["--workers", str(args.workers),
                                                   *args.server_args.split()], reference_src)
                    except RuntimeError as exc:
                        reference_error = str(exc)[-800:]
                        c.log(f"{ref_run}: {reference_error}")
                    else:
                        c.log(f"{ref_run}: commit {reference[:7]}, server pid {proc.pid}")
                        results[ref_run] = run_scenario(port, proc.pid, mode, args,
                                                        traffic_file, texts, offset)
                        proc.send_signal(signal.SIGTERM)
                        exit_codes[ref_run] = proc.wait(timeout=600)
                        proc = None
            offset = end
        traffic["served"] = offset
        traffic["repeats_by_wrap"] = max(0, offset - len(texts))
        if args.floor_baseline:
            for variant in variants:
                floors[variant] = run_floor(spec_for(variant, f"floor-{variant}"), args.batch,
                                            args, traffic_file, offset, args.workers)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if reference_src is not None:
            c.remove_checkout(reference_src.parent)
        shutil.rmtree(folder, ignore_errors=True)
        for spec_copy in copies:
            spec_copy.unlink(missing_ok=True)

    base = results.get("health")
    metrics = []
    for mode, title in (("search", "search"), ("mixed", "search with 1 feedback per "
                                                        f"{args.feedback_every}")):
        for variant in variants:
            r = results.get(f"{mode}-{variant}")
            if not r:
                continue
            label = f"{title}{'' if variant == 'cached' else ', no caches'}"
            floor = floors.get(variant)
            lat = r["latency_ms"]
            errors = r["errors"] + r["connection_errors"]
            st = r.get("stream")
            cache_note = (f"; cache hits: {_rates_text(r['cache']) or 'none'} (repeat share "
                          f"{100 * st['repeat_share']:.0f}%"
                          + (f", {st['repeats_by_wrap']} repeats by wrap"
                             if st["repeats_by_wrap"] else "") + ")") \
                if st and variant == "cached" else ""
            metrics += [
                c.metric(f"{label}: p50 latency, {args.clients} clients", lat["p50"], "ms",
                         target=f"< {TARGET_P50_MS:.0f} ms", passed=lat["p50"] < TARGET_P50_MS,
                         baseline=base and base["latency_ms"]["p50"],
                         baseline_name="GET /health p50",
                         note=f"mean batch {r['mean_batch_size'] or 0:.1f}"),
                c.metric(f"{label}: p99 latency, {args.clients} clients", lat["p99"], "ms",
                         target=f"< {TARGET_P99_MS:.0f} ms", passed=lat["p99"] < TARGET_P99_MS,
                         baseline=base and base["latency_ms"]["p99"],
                         baseline_name="GET /health p99"),
            ]
            ref = results.get(f"{mode}-{variant}@reference")
            if ref:
                for q in ("p50", "p99"):
                    ratio = lat[q] / ref["latency_ms"][q]
                    metrics.append(c.metric(
                        f"{label}: {q} latency against commit {reference[:7]}", lat[q], "ms",
                        target=f"≤ {TARGET_VS_REFERENCE:.2f}× the commit's",
                        passed=ratio <= TARGET_VS_REFERENCE, baseline=ref["latency_ms"][q],
                        baseline_name=f"commit {reference[:7]}'s server right after, same "
                                      "slice of the stream, spec and pre-trained state"))
            elif mode == "search" and reference:
                metrics.append(c.metric(f"{label}: latency against commit {reference[:7]}",
                                        None, note=f"not measured: {reference_error}"))
            metrics += [
                c.metric(f"{label}: throughput", r["search_rps"], "q/s",
                         baseline=floor and floor["batch_logged"]["queries_per_s"],
                         baseline_name=f"Pipeline.run_batch alone in {args.workers} "
                                       f"process(es) at once (as many as server workers), "
                                       f"batches of {args.batch}, logging decisions"
                                       + ("" if variant == "cached" else ", no caches"),
                         note=(f"GET /health: {base['throughput_rps']:.0f} req/s; "
                               if base else "")
                         + f"load generator {100 * r['loadgen_cpu_share_of_one_core']:.0f}% "
                         f"of a core, server {100 * r['server_cpu_share_of_one_core']:.0f}%"
                         + cache_note),
                c.metric(f"{label}: failed requests", errors, "", target="0",
                         passed=errors == 0, digits=0),
                c.metric(f"{label}: answers without an arm (deadline or failure)",
                         r["degraded"], "", target="0", passed=r["degraded"] == 0, digits=0,
                         note=(", ".join(f"{k} {v}" for k, v in r["arms_dropped"].items())
                               or None)),
            ]
    for variant, floor in floors.items():
        f = floor["batch"]
        metrics.append(c.metric(
            f"Pipeline.run_batch alone (no HTTP), batches of {args.batch}, "
            f"{floor['processes']} process(es)" + ("" if variant == "cached" else ", no caches"),
            f["queries_per_s"], "q/s", baseline=floor["batch_logged"]["queries_per_s"],
            baseline_name="the same, logging decisions",
            note="ms per query (process 0): " + ", ".join(
                f"{n} {v:.2f}" for n, v in f["node_ms_per_query"].items()
                if n not in ("policy", "framework") and v >= 0.02)
            + f"; one query at a time: {floor['single']['queries_per_s']:.0f} q/s"
            + (f"; cache hits: {_rates_text(f['cache']) or 'none'} (repeat share "
               f"{100 * (f['repeat_share'] or 0):.0f}%)" if variant == "cached" else "")))
    details = {"pretrained": pretrained, "traffic": traffic,
               "cache_hit_rates": {run: {node: v["hit_rate"] for node, v in r["cache"].items()}
                                   | {"repeat_share": r["stream"]["repeat_share"]}
                                   for run, r in results.items() if "cache" in r},
               "clients": args.clients, "duration_s": args.duration, "warmup_s": args.warmup,
               "server_args": args.server_args, "server_start_s": starts,
               "server_stop_s": stops,
               "server_exit_codes": exit_codes, "scenarios": results,
               "pipeline_alone": floors, "workers": args.workers, "variants": variants,
               "reference_commit": reference, "reference_error": reference_error,
               "command": "ltrr serve <copy of pipelines/music-serve.yaml, caches removed "
                          "for the uncached variant> --port 0 "
                          f"--workers {args.workers} " + args.server_args}
    c.emit(c.result("serve", "ltrr serve: /search latency and throughput over HTTP", metrics,
                    details, started=started), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
