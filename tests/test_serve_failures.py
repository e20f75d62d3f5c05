"""`ltrr serve` when a part of it fails: the event log cannot be written (503, nothing
acknowledged is lost), one query breaks the batch it ran in (the others are answered)."""

from __future__ import annotations

import shutil
import threading
import time

import httpx
import polars as pl
import pytest

POISON_PLUGIN = """
import os
import time

import ltrr.feedback.events as _events

if os.environ.get("LTRR_TEST_SCANS"):          # count /health's scans of the state folder
    _scan = _events.skipped_invalid

    def _counted(directory):
        with open(os.environ["LTRR_TEST_SCANS"], "a") as f:
            f.write("scan\\n")
        return _scan(directory)

    _events.skipped_invalid = _counted

from ltrr.components import Arm, Ranker
from ltrr.hookspecs import hookimpl
from ltrr.types import Candidate, Ranked


class NapArm(Arm):
    \"\"\"Sleeps 0.3 s per batch (queries queue meanwhile), then answers every id.\"\"\"

    name = "nap"

    def retrieve_batch(self, requests):
        time.sleep(0.3)
        return [[Candidate(e, self.ctx.node_id, r, 1.0 / r)
                 for r, e in enumerate(self.ctx.catalog.ids[:q.k], 1)] for q in requests]


class FragileArm(Arm):
    \"\"\"Answers every id, except for the query 'break', where it raises.\"\"\"

    name = "fragile"

    def retrieve_batch(self, requests):
        if any(q.query.text == "break" for q in requests):
            raise RuntimeError("broken on purpose")
        return [[Candidate(e, self.ctx.node_id, r, 1.0 / r)
                 for r, e in enumerate(self.ctx.catalog.ids[:q.k], 1)] for q in requests]


class PoisonRanker(Ranker):
    \"\"\"Fails on the query 'poison', and so the whole batch it is in (test only).\"\"\"

    name = "poison"

    def rank(self, query, merged, k):
        if query.text == "poison":
            raise ValueError("poisoned query")
        ordered = sorted(merged, key=lambda m: -m.score)[:k]
        return [Ranked(i + 1, m.entity_id, m.score, m.sources) for i, m in enumerate(ordered)]


@hookimpl
def ltrr_components():
    return [NapArm, FragileArm, PoisonRanker]
"""


@pytest.fixture
def poison_spec(tmp_path, monkeypatch):
    """A spec with the test-only ``nap`` arm and ``poison`` ranker, installed as a plugin
    distribution on PYTHONPATH (found through its entry point)."""
    import os

    site = tmp_path / "site"
    info = site / "ltrr_test_poison-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "ltrr_test_poison.py").write_text(POISON_PLUGIN)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ltrr-test-poison\n"
                                   "Version: 0.1\n")
    (info / "entry_points.txt").write_text("[ltrr]\ntest_poison = ltrr_test_poison\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(site), os.environ.get("PYTHONPATH")) if p))
    pl.DataFrame({"id": ["a", "b", "c"], "name": ["x", "y", "z"]}).write_parquet(
        tmp_path / "c.parquet")
    spec = tmp_path / "s.yaml"
    spec.write_text("name: t\ncatalog: {path: c.parquet}\n"
                    "arms:\n  - {id: sleepy, use: nap, deadline_ms: 600000}\n"
                    "policy: {budget: 3}\nranker: {use: poison}\noutput: {k: 3}\n")
    return spec


def test_answers_without_an_arm_are_counted(poison_spec, start_server):
    """An arm dropped by its deadline or by failing is named in the answer's trace and
    counted in /metrics (by node and reason), and the search counts as degraded."""
    spec = poison_spec.with_name("dropping.yaml")
    spec.write_text("name: t\ncatalog: {path: c.parquet}\n"
                    "arms:\n  - {id: sleepy, use: nap, deadline_ms: 20}\n"
                    "  - {id: steady, use: fragile}\n"
                    "policy: {budget: 6}\noutput: {k: 3}\n")
    server = start_server(spec, "--max-batch", "1")
    url = server.url
    ok = httpx.post(url + "/search", json={"query": "hello"}, timeout=120).json()
    assert [r["entity_id"] for r in ok["results"]] == ["a", "b", "c"]
    assert [t for t in ok["trace"] if t.endswith("; dropped")] == [
        "arm 'sleepy' exceeded its deadline (20 ms); dropped"]
    broken = httpx.post(url + "/search", json={"query": "break"}, timeout=120)
    assert broken.status_code == 200 and broken.json()["results"] == []
    assert any(t.startswith("arm 'steady' failed: RuntimeError: broken on purpose")
               for t in broken.json()["trace"]), broken.json()["trace"]
    metrics = httpx.get(url + "/metrics", timeout=10).text
    for line in ('ltrr_arms_dropped_total{node="sleepy",reason="deadline"} 2.0',
                 'ltrr_arms_dropped_total{node="steady",reason="failed"} 1.0',
                 "ltrr_searches_degraded_total 2.0"):
        assert line in metrics, metrics
    assert server.stop() == 0


def test_health_does_not_scan_the_state_folder_on_every_call(poison_spec, start_server,
                                                            tmp_path, monkeypatch):
    """/health is polled: its problems (quarantined parts, invalid timestamps, damaged
    cursors) are looked for after learning runs and reloads, and at most every few
    seconds otherwise — not once per call (100 calls made 100 scans of the folder)."""
    scans = tmp_path / "scans.txt"
    monkeypatch.setenv("LTRR_TEST_SCANS", str(scans))
    server = start_server(poison_spec)
    for _ in range(100):
        assert httpx.get(server.url + "/health", timeout=30).json()["status"] == "ok"
    count = len(scans.read_text().splitlines()) if scans.exists() else 0
    assert 1 <= count <= 20, count
    assert server.stop() == 0


def test_a_query_that_breaks_its_batch_fails_alone(poison_spec, start_server):
    """The batch is answered query by query when it fails: the poisoned query gets a 500,
    every other query in that batch its results."""
    server = start_server(poison_spec, "--max-batch", "16")
    url = server.url
    for attempt in range(5):
        answers: dict[str, httpx.Response] = {}

        def send(text: str, rid: str) -> None:
            answers[rid] = httpx.post(url + "/search", json={"query": text, "request_id": rid},
                                      timeout=120)

        # the first query holds the batcher in the nap; the others queue and batch together
        first = threading.Thread(target=send, args=("first", f"f{attempt}"))
        first.start()
        time.sleep(0.05)
        texts = ["one", "two", "poison", "three", "four"]
        threads = [threading.Thread(target=send, args=(t, f"{t}{attempt}")) for t in texts]
        for t in threads:
            t.start()
        for t in [first, *threads]:
            t.join(180)
        for rid, r in answers.items():
            if rid.startswith("poison"):
                assert r.status_code == 500, r.text
                assert r.json()["error"] and "Traceback" not in r.text
            else:
                assert r.status_code == 200, r.text
                assert [x["entity_id"] for x in r.json()["results"]] == ["a", "b", "c"]
        if "answering its queries one by one" in server.stderr:
            break                       # the poisoned query shared a batch with others
    else:
        pytest.fail(f"the poisoned query never shared a batch:\n{server.stderr[-3000:]}")
    assert httpx.get(url + "/health", timeout=10).json()["status"] == "ok"
    assert server.stop() == 0


def test_feedback_is_503_while_the_event_log_cannot_be_written(serve_spec, start_server):
    """An event log that cannot be written: /feedback answers 503 with Retry-After and
    acknowledges nothing; once it can be written again, the same events are accepted,
    and every acknowledged event is logged once."""
    server = start_server(serve_spec)
    url = server.url

    def post(ids: list[str]) -> httpx.Response:
        return httpx.post(url + "/feedback", json={"events": [
            {"event_id": e, "entity_id": "289", "type": "click", "query": "x", "user_id": "u"}
            for e in ids]}, timeout=60)

    assert post(["ok-1"]).status_code == 200
    events = serve_spec.parent / "state" / "events"
    aside = events.with_name("events-aside")
    shutil.move(events, aside)
    events.write_text("not a folder")             # every write into it fails (even as root)
    refused = post(["down-1", "down-2"])
    assert refused.status_code == 503, refused.text
    assert refused.headers.get("retry-after")
    body = refused.json()
    assert "not logged" in body["error"] and "nothing" in body["hint"]
    assert httpx.post(url + "/search", json={"query": "metallica"}, timeout=60) \
        .status_code == 200                       # searching goes on
    events.unlink()
    shutil.move(aside, events)
    again = post(["down-1", "down-2"])
    assert again.status_code == 200 and again.json() == {"received": 2, "new": 2}, again.text
    logged = pl.read_parquet(events / "*.parquet")["event_id"].to_list()
    assert sorted(logged) == ["down-1", "down-2", "ok-1"]
    assert server.stop() == 0
