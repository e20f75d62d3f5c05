"""``ltrr serve --workers 2`` against real processes: one port, two pipelines; worker 0
learns from every worker's feedback and worker 1 picks up what it learned."""

from __future__ import annotations

import os
import signal
import time
from collections import defaultdict

import httpx
import polars as pl
import pytest

from ltrr.compiler import load_plan
from ltrr.feedback.ingest import event_log

QUERY = "grandmas favourite singer"      # matches nothing by name: only memory can learn it
ENTITY = "289"


def _fresh(url: str, method: str, path: str, **kw) -> httpx.Response:
    """One request on a new connection (the kernel picks the worker per connection)."""
    with httpx.Client(timeout=30) as client:
        return client.request(method, url + path, **kw)


def _from_each(url: str, method: str, path: str, per_worker: int = 1, **kw
               ) -> dict[str, list[httpx.Response]]:
    """Responses by worker until each of the two answered ``per_worker`` times."""
    out: dict[str, list[httpx.Response]] = defaultdict(list)
    for _ in range(400):
        r = _fresh(url, method, path, **kw)
        assert r.status_code == 200, r.text
        out[r.headers["x-ltrr-worker"]].append(r)
        if len(out) == 2 and all(len(v) >= per_worker for v in out.values()):
            return out
    raise AssertionError(f"only workers {sorted(out)} answered")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_workers_share_the_port_the_logs_and_what_the_leader_learns(serve_spec, start_server):
    server = start_server(serve_spec, "--workers", "2")
    health = {w: rs[0].json()["worker"] for w, rs in _from_each(server.url, "GET",
                                                                  "/health").items()}
    assert {w: h["role"] for w, h in health.items()} == {"0": "leader", "1": "follower"}
    pids = {h["pid"] for h in health.values()}
    assert len(pids) == 2 and server.pid not in pids

    searches = _from_each(server.url, "POST", "/search", per_worker=3,
                          json={"query": QUERY, "k": 10})
    rids = [r.json()["request_id"] for rs in searches.values() for r in rs]
    assert all(ENTITY not in [x["entity_id"] for x in r.json()["results"]]
               for rs in searches.values() for r in rs)
    events = [{"event_id": f"click-{rid}", "request_id": rid, "entity_id": ENTITY,
               "type": "click", "position": 3} for rid in rids]
    # clicks on the first result of the follower's searches: the leader's ranker learns
    # from decisions the follower logged
    followed = [r.json() for r in searches["1"]]
    events += [{"event_id": f"first-{d['request_id']}", "request_id": d["request_id"],
                "entity_id": d["results"][0]["entity_id"], "type": "click", "position": 1}
               for d in followed]
    # the same events through both workers: each id is logged once
    posts = _from_each(server.url, "POST", "/feedback", per_worker=2, json={"events": events})
    answers = [r.json() for rs in posts.values() for r in rs]
    assert all(a["received"] == len(events) for a in answers)
    assert sum(a["new"] for a in answers) == len(events)
    logged = pl.scan_parquet(event_log(load_plan(serve_spec)).parts()).collect()
    assert sorted(logged["event_id"].to_list()) == sorted(e["event_id"] for e in events)

    # the leader learns (from the follower's decisions too); the follower reopens its
    # learners: both now find the clicked artist through the memory arm
    deadline = time.monotonic() + 30
    while True:
        found = {w: [ENTITY in [x["entity_id"] for x in r.json()["results"]
                                if "memory" in x["arms"]] for r in rs]
                 for w, rs in _from_each(server.url, "POST", "/search",
                                         json={"query": QUERY, "k": 10}).items()}
        if all(all(v) for v in found.values()):
            break
        assert time.monotonic() < deadline, found
        time.sleep(0.5)
    examples = pl.scan_parquet(serve_spec.parent / "state" / "ranker.learned" / "examples"
                               / "*.parquet").filter(pl.col("label") > 0).collect()
    assert {d["request_id"] for d in followed} <= set(examples["request_id"].to_list())
    follower = _from_each(server.url, "GET", "/health")["1"][0].json()["learning"]
    assert follower["role"] == "follower" and follower["refreshes"] >= 1
    assert "memory" in follower["last"]["nodes"]

    assert server.stop() == 0
    assert not any(_alive(p) for p in pids)
    assert "ltrr serve: stopped" in server.stderr


def test_a_killed_worker_comes_back_and_a_reload_reaches_every_worker(serve_spec,
                                                                       start_server):
    server = start_server(serve_spec, "--workers", "2")
    before = _from_each(server.url, "GET", "/health")["1"][0].json()["worker"]["pid"]
    os.kill(before, signal.SIGKILL)
    deadline = time.monotonic() + 120
    while True:        # searches keep being answered meanwhile (by worker 0)
        assert _fresh(server.url, "POST", "/search", json={"query": "metallica"}).status_code \
            == 200
        try:
            now = _from_each(server.url, "GET", "/health")["1"][0].json()["worker"]["pid"]
        except (AssertionError, httpx.TransportError):
            now = before
        if now != before:
            break
        assert time.monotonic() < deadline, server.stderr
        time.sleep(0.5)
    assert "worker 1" in server.stderr and "starting it again" in server.stderr

    reloaded = _fresh(server.url, "POST", "/admin/reload")
    assert reloaded.status_code == 200 and reloaded.json()["generation"] == 2
    deadline = time.monotonic() + 120
    while True:
        generations = {w: rs[0].json()["generation"]
                       for w, rs in _from_each(server.url, "GET", "/health").items()}
        if generations == {"0": 2, "1": 2}:
            break
        assert time.monotonic() < deadline, generations
        time.sleep(0.5)
    assert server.stop() == 0


@pytest.mark.parametrize("broken", ["spec", "index"])
def test_a_spec_that_cannot_be_served_stops_every_worker(tmp_path, serve_spec, start_server,
                                                         broken):
    import yaml

    data = yaml.safe_load(serve_spec.read_text())
    if broken == "spec":
        data["ranker"]["use"] = "lightgbmm"            # caught by the supervisor
    else:
        data["state_dir"] = str(tmp_path / "empty")   # caught by each worker, opening
    spec = tmp_path / "broken.yaml"
    spec.write_text(yaml.safe_dump(data))
    server = start_server(spec, "--workers", "2", ready=False)
    assert server.proc.wait(180) == 1
    server._reader.join(10)
    assert "error:" in server.stderr
    assert ("lightgbmm" in server.stderr) if broken == "spec" else (
        "ltrr index" in server.stderr)
    assert "listening" not in server.stderr


def test_a_vw_policy_learned_by_the_leader_is_what_the_follower_plays(serve_spec,
                                                                      start_server):
    """A Vowpal Wabbit policy served by two workers: feedback on either worker's decisions
    is learned by the leader, and the follower reloads that model, so both log the same
    pmf for a query, which differs from the untrained one."""
    import json

    import yaml

    data = yaml.safe_load(serve_spec.read_text())
    data["policy"] = {"use": "vw", "budget": 100,
                      "with": {"step": 25, "exploration": "epsilon", "epsilon": 0.2}}
    serve_spec.write_text(yaml.safe_dump(data, sort_keys=False))
    server = start_server(serve_spec, "--workers", "2")
    decisions = serve_spec.parent / "state" / "decisions"

    def pmfs(tag: str) -> dict[str, list[float]]:
        """Search QUERY on each worker; the pmf each logged for it, by worker."""
        rids = {w: rs[0].json()["request_id"] for w, rs in _from_each(
            server.url, "POST", "/search", json={"query": QUERY, "user_id": tag}).items()}
        deadline = time.monotonic() + 60
        while True:              # decisions are written in the background
            parts = sorted(decisions.glob("part-*.parquet"))
            rows = pl.read_parquet(parts).filter(pl.col("request_id").is_in(
                list(rids.values()))) if parts else pl.DataFrame()
            if rows.height == 2:
                by_id = {r: [p for _, p in json.loads(pmf)] for r, pmf in
                         rows.select("request_id", "pmf").iter_rows()}
                return {w: by_id[r] for w, r in rids.items()}
            assert time.monotonic() < deadline, rids
            time.sleep(0.2)

    before = pmfs("u0")
    assert before["0"] == pytest.approx(before["1"])
    # rewarded decisions from both workers: a click on the first result of each
    searches = _from_each(server.url, "POST", "/search", per_worker=15,
                          json={"query": "metallica", "k": 10})
    events = [{"event_id": f"c-{d['request_id']}", "request_id": d["request_id"],
               "entity_id": d["results"][0]["entity_id"], "type": "click", "position": 1}
              for rs in searches.values() for d in (r.json() for r in rs) if d["results"]]
    assert len(events) >= 30
    r = _fresh(server.url, "POST", "/feedback", json={"events": events})
    assert r.status_code == 200 and r.json()["new"] == len(events), r.text
    deadline = time.monotonic() + 120
    while True:            # the leader learned the policy and the follower reloaded it
        health = {w: rs[0].json() for w, rs in _from_each(server.url, "GET",
                                                          "/health").items()}
        leader, follower = health["0"], health["1"]["learning"]
        if (leader["pending_events"] == 0 and follower["refreshes"] >= 1
                and "policy" in (follower["last"] or {}).get("nodes", [])):
            break
        assert time.monotonic() < deadline, health
        time.sleep(0.5)
    after = pmfs("u0")
    assert after["0"] == pytest.approx(after["1"], abs=1e-6)
    assert after["0"] != pytest.approx(before["0"], abs=1e-3)
    assert server.stop() == 0
