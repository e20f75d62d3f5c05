"""`ltrr serve` under load: client-measured latency and throughput of /search over HTTP.

Starts ``ltrr serve`` on a copy of ``pipelines/music-serve.yaml`` (written beside it,
removed afterwards) whose state folder is fresh: the built indexes are linked in, so
logs and learned state start empty (the spec is indexed first if needed). A separate
load-generator process drives it (asyncio on uvloop, raw HTTP/1.1 over keep-alive
connections: the leanest client, as it competes with the server for the same 2 cores),
closed loop: each of 20 clients sends its next request as soon as the previous answer
arrived.

Scenarios, one after the other on the same server, each after a short warm-up:

* baseline — ``GET /health`` at the same concurrency: the HTTP floor (uvicorn,
  FastAPI, the middleware) with no pipeline work;
* search — ``POST /search`` with the queries of
  ``examples/data/lastfm/queries/queries.jsonl``, cycled;
* mixed — the same, plus one ``POST /feedback`` (a click on the first result of an
  earlier search, by request id) after every 10 searches: the event log's fsync and
  the background learner compete with the searches. Search latency is reported.

Reported: p50 / p99 latency and throughput (requests/s) as the clients measured them,
errors (non-2xx, connection errors), the load generator's CPU share (of one core and
of the machine), the server's CPU share, and the server's own batch statistics from
``/metrics``. Targets (search): p50 < 20 ms, p99 < 60 ms at 20 clients.

    .venv/bin/python benchmarks/bench_serve.py [--clients 20] [--duration 20] [--out FILE]
"""

from __future__ import annotations

import asyncio
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
QUERIES = c.ROOT / "examples" / "data" / "lastfm" / "queries" / "queries.jsonl"
TARGET_P50_MS = 20.0
TARGET_P99_MS = 60.0


# --------------------------------------------------------------------------- load generator

async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    body = await reader.readexactly(int(m.group(1))) if m else b""
    return status, body


def _post(path: str, payload: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload


async def _client(i: int, host: str, port: int, mode: str, queries: list[str],
                  stop_at: float, measure_from: float, feedback_every: int,
                  out: dict[str, Any]) -> None:
    from time import perf_counter

    reader = writer = None
    n = 0
    lat_search, lat_feedback = out["search"], out["feedback"]
    health = b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n"
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
            rid = f"b{i}-{n}"
            text = queries[(i * 997 + n) % len(queries)]
            request = _post("/search", json.dumps({"query": text, "request_id": rid}).encode())
        n += 1
        t = perf_counter()
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
            pending_click = _post("/feedback", json.dumps({"events": [{
                "event_id": f"{doc['request_id']}-click", "request_id": doc["request_id"],
                "entity_id": entity, "type": "click", "position": 1}]}).encode())
    if writer is not None:
        writer.close()


def client_main(args) -> int:
    """The load generator (run as its own process): prints its measurements as JSON."""
    import uvloop

    queries = [json.loads(line)["query"] for line in QUERIES.read_text().splitlines()
               if line.strip()]
    out: dict[str, Any] = {"search": [], "feedback": [], "errors": 0, "connection_errors": 0}

    async def run() -> None:
        from time import perf_counter

        start = perf_counter()
        measure_from = start + args.warmup
        stop_at = measure_from + args.duration
        await asyncio.gather(*[_client(i, args.host, args.port, args.mode, queries, stop_at,
                                       measure_from, args.feedback_every, out)
                               for i in range(args.clients)])

    cpu0, wall0 = os.times(), time.perf_counter()
    uvloop.run(run())
    cpu1 = os.times()
    wall = time.perf_counter() - wall0
    out["cpu_s"] = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    out["wall_s"] = wall
    out["measured_s"] = args.duration
    out["error_samples"] = out.get("error_samples", [])[:5]
    sys.stdout.write(json.dumps(out))
    return 0


# --------------------------------------------------------------------------- pipeline floor

def floor_main(args) -> int:
    """The pipeline alone (run as its own process): ``Pipeline.run_batch`` in batches of
    ``--batch`` over the same queries for ``--duration`` s, no HTTP, no logging."""
    from time import perf_counter

    from ltrr.compiler import load_plan
    from ltrr.runtime.pipeline import Pipeline
    from ltrr.types import Query

    queries = [json.loads(line)["query"] for line in QUERIES.read_text().splitlines()
               if line.strip()]
    plan = load_plan(args.spec)
    pipeline = Pipeline(plan, log_decisions=False)
    logged = Pipeline(plan, log_decisions=True)       # the same, logging as usual
    try:
        n = 0

        def batch(size: int) -> list:
            nonlocal n
            n += size
            return [Query(f"f{n}-{i}", queries[(n + i) % len(queries)]) for i in range(size)]

        stop = perf_counter() + args.warmup
        while perf_counter() < stop:
            pipeline.run_batch(batch(args.batch))
        out: dict[str, Any] = {}
        for size, key, pipe in ((args.batch, "batch", pipeline), (1, "single", pipeline),
                                (args.batch, "batch_logged", logged)):
            lat, done = [], 0
            nodes: dict[str, float] = {}
            cpu0, t0 = os.times(), perf_counter()
            stop = t0 + (args.duration if size > 1 else args.duration / 2)
            while perf_counter() < stop:
                t = perf_counter()
                decisions = pipe.run_batch(batch(size))
                lat.append((perf_counter() - t) * 1000.0)
                done += size
                for node, ms in decisions[0].timings_ms.items():   # per query of the batch
                    nodes[node] = nodes.get(node, 0.0) + ms * size
            wall, cpu1 = perf_counter() - t0, os.times()
            nodes.pop("batch_size", None)
            out[key] = {"batch_size": size, "queries_per_s": done / wall,
                        "batch_ms": c.summary(lat, 3),
                        "node_ms_per_query": {n: round(v / done, 3) for n, v in nodes.items()},
                        "cpu_share_of_one_core": ((cpu1.user - cpu0.user)
                                                  + (cpu1.system - cpu0.system)) / wall}
    finally:
        pipeline.close()
        logged.close()
    sys.stdout.write(json.dumps(out))
    return 0


def run_floor(spec: Path, batch: int, args) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--floor", "--spec", str(spec), "--batch", str(batch),
           "--duration", str(args.duration), "--warmup", str(args.warmup)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration * 2 + 300)
    if done.returncode != 0:
        raise RuntimeError(f"pipeline floor failed: {done.stderr[-2000:]}")
    out = json.loads(done.stdout)
    c.log(f"pipeline alone: {out['batch']['queries_per_s']:.0f} q/s in batches of {batch} "
          f"(batch p50 {out['batch']['batch_ms']['p50']:.1f} ms), "
          f"{out['batch_logged']['queries_per_s']:.0f} q/s logging decisions, "
          f"{out['single']['queries_per_s']:.0f} q/s one at a time "
          f"(p50 {out['single']['batch_ms']['p50']:.2f} ms); ms per query in batches: "
          + ", ".join(f"{n} {v:.2f}" for n, v in out["batch"]["node_ms_per_query"].items()))
    return out


# --------------------------------------------------------------------------- server

def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fresh_spec(state: Path, source: Path = SPEC) -> Path:
    """A copy of music-serve.yaml beside it (same relative paths, so the same index
    fingerprints) whose state folder is ``state``, with the original's built indexes
    linked in: logs and learned state start empty. The caller deletes the copy."""
    import yaml

    from ltrr.compiler import load_plan

    plan = load_plan(source)
    c.ensure_music_index(plan)
    data = yaml.safe_load(source.read_text())
    state.mkdir(parents=True, exist_ok=True)
    data["state_dir"] = str(state)
    for node in plan.spec.state_dir.iterdir():
        if (node / "manifest.json").exists():
            (state / node.name).symlink_to(node, target_is_directory=True)
    path = source.with_name(f".bench-serve-{os.getpid()}.yaml")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def pretrain(spec: Path, folder: Path, sessions: int, seed: int) -> dict[str, Any]:
    """Simulate ``sessions`` Last.fm sessions on ``spec`` (their logs kept in ``folder``)
    and replay that log into ``spec``'s own state with ``ltrr train``: the server then
    starts with trained learners, as after a period of serving."""
    from ltrr.compiler import load_plan
    from ltrr.feedback.train import train
    from ltrr.simulate.engine import PolicyChoice, SimConfig, simulate

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


def start_server(spec: Path, extra: list[str]) -> tuple[subprocess.Popen, int]:
    cmd = [str(c.venv_bin("ltrr")), "serve", str(spec), "--port", "0", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
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


def scrape(port: int) -> dict[str, float]:
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def run_scenario(port: int, server_pid: int, mode: str, args) -> dict[str, Any]:
    before = scrape(port)
    cpu0 = _proc_cpu_s(server_pid)
    t0 = time.perf_counter()
    cmd = [sys.executable, __file__, "--client", "--port", str(port), "--mode", mode,
           "--clients", str(args.clients), "--duration", str(args.duration),
           "--warmup", str(args.warmup), "--feedback-every", str(args.feedback_every)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 120)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    wall = time.perf_counter() - t0
    server_cpu = _proc_cpu_s(server_pid) - cpu0
    after = scrape(port)
    out = json.loads(done.stdout)
    lat = out["search"] if mode != "health" else out["search"]
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
    }
    c.log(f"{mode}: p50 {res['latency_ms']['p50']:.2f} ms, p99 {res['latency_ms']['p99']:.2f} "
          f"ms, {res['throughput_rps']:.0f} req/s, errors {res['errors']}+"
          f"{res['connection_errors']}, loadgen CPU {res['loadgen_cpu_share_of_one_core']:.0%}"
          f" of a core, server {res['server_cpu_share_of_one_core']:.0%}"
          + (f", mean batch {res['mean_batch_size']:.1f}" if batches else ""))
    return res


def main() -> int:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds per scenario")
    p.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first")
    p.add_argument("--feedback-every", type=int, default=10,
                   help="mixed scenario: one feedback post per this many searches")
    p.add_argument("--server-args", default="", help="extra `ltrr serve` flags, e.g. "
                   "'--max-batch 16 --max-wait-ms 2'")
    p.add_argument("--scenarios", default="health,search,mixed")
    p.add_argument("--pretrain-sessions", type=int, default=1500, help="simulated Last.fm "
                   "sessions whose log is replayed into the fresh state first (ltrr train), so "
                   "the learners — the LightGBM ranker, the memory arm — serve trained; 0: cold")
    p.add_argument("--no-floor", dest="floor_baseline", action="store_false",
                   help="skip the in-process pipeline baseline")
    p.add_argument("--spec", type=Path, default=SPEC, help="the spec to serve (default: "
                   "pipelines/music-serve.yaml); a copy with a fresh state folder is served")
    # load-generator mode (internal)
    p.add_argument("--client", action="store_true", help=__import__("argparse").SUPPRESS)
    p.add_argument("--host", default="127.0.0.1", help=__import__("argparse").SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=__import__("argparse").SUPPRESS)
    p.add_argument("--mode", default="search", help=__import__("argparse").SUPPRESS)
    p.add_argument("--floor", action="store_true", help=__import__("argparse").SUPPRESS)
    p.add_argument("--batch", type=int, default=10, help="batch size of the in-process "
                   "pipeline baseline (default: 10, about what 20 closed-loop clients make)")
    args = p.parse_args()
    if args.client:
        return client_main(args)
    if args.floor:
        return floor_main(args)

    started = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="ltrr-bench-serve-"))
    proc = spec = None
    try:
        spec = fresh_spec(folder / "state", args.spec.resolve())
        pretrained = pretrain(spec, folder / "sim", args.pretrain_sessions, args.seed) \
            if args.pretrain_sessions else None
        t = time.perf_counter()
        proc, port = start_server(spec, args.server_args.split())
        start_s = time.perf_counter() - t
        c.log(f"server pid {proc.pid} on port {port} (started in {start_s:.1f} s); "
              f"{args.clients} clients, {args.duration:.0f} s per scenario")
        results = {mode: run_scenario(port, proc.pid, mode, args)
                   for mode in args.scenarios.split(",")}
        health = json.loads(__import__("urllib.request").request.urlopen(
            f"http://127.0.0.1:{port}/health", timeout=10).read())
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        floor = run_floor(spec, args.batch, args) if args.floor_baseline else None
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(folder, ignore_errors=True)
        if spec is not None:
            spec.unlink(missing_ok=True)

    base = results.get("health")
    metrics = []
    for mode, title in (("search", "search"), ("mixed", "search with 1 feedback per "
                                                        f"{args.feedback_every}")):
        r = results.get(mode)
        if not r:
            continue
        lat = r["latency_ms"]
        errors = r["errors"] + r["connection_errors"]
        metrics += [
            c.metric(f"{title}: p50 latency, {args.clients} clients", lat["p50"], "ms",
                     target=f"< {TARGET_P50_MS:.0f} ms", passed=lat["p50"] < TARGET_P50_MS,
                     baseline=base and base["latency_ms"]["p50"],
                     baseline_name="GET /health p50",
                     note=f"mean batch {r['mean_batch_size'] or 0:.1f}"),
            c.metric(f"{title}: p99 latency, {args.clients} clients", lat["p99"], "ms",
                     target=f"< {TARGET_P99_MS:.0f} ms", passed=lat["p99"] < TARGET_P99_MS,
                     baseline=base and base["latency_ms"]["p99"],
                     baseline_name="GET /health p99"),
            c.metric(f"{title}: throughput", r["throughput_rps"], "q/s",
                     baseline=floor and floor["batch_logged"]["queries_per_s"],
                     baseline_name=f"Pipeline.run_batch alone, batches of {args.batch}, "
                                   "logging decisions",
                     note=(f"GET /health: {base['throughput_rps']:.0f} req/s; " if base else "")
                     + f"load generator {100 * r['loadgen_cpu_share_of_one_core']:.0f}% of "
                     f"a core, server {100 * r['server_cpu_share_of_one_core']:.0f}%"),
            c.metric(f"{title}: failed requests", errors, "", target="0", passed=errors == 0,
                     digits=0),
        ]
    if floor:
        f = floor["batch"]
        metrics.append(c.metric(
            f"Pipeline.run_batch alone (no HTTP), batches of {args.batch}", f["queries_per_s"],
            "q/s", baseline=floor["batch_logged"]["queries_per_s"],
            baseline_name="the same, logging decisions",
            note="ms per query: " + ", ".join(
                f"{n} {v:.2f}" for n, v in f["node_ms_per_query"].items()
                if n not in ("policy", "framework") and v >= 0.02)
            + f"; one query at a time: {floor['single']['queries_per_s']:.0f} q/s"))
    details = {"pretrained": pretrained,
               "clients": args.clients, "duration_s": args.duration, "warmup_s": args.warmup,
               "server_args": args.server_args, "server_start_s": round(start_s, 2),
               "server_exit_code": rc, "scenarios": results, "health_after": health,
               "pipeline_alone": floor,
               "command": "ltrr serve <copy of pipelines/music-serve.yaml> --port 0 "
                          + args.server_args}
    c.emit(c.result("serve", "ltrr serve: /search latency and throughput over HTTP", metrics,
                    details, started=started), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
