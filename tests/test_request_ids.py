"""Request ids name one decision each (issue 10, items 4, 7, 10 over HTTP): a reused
``request_id`` is refused (409) by ``/search`` and ``ltrr run``, since feedback naming it
could not say which decision it answers; bad timestamps are 422s naming the field."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import httpx
import polars as pl
import pytest

JSON = {"content-type": "application/json"}
LTRR = os.path.join(os.path.dirname(sys.executable), "ltrr")


def _post(url: str, path: str, body: bytes) -> httpx.Response:
    return httpx.post(url + path, content=body, headers=JSON, timeout=60)


def _error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error", "field", "hint"} and body["error"], body
    return body


# --- bad timestamps over HTTP -------------------------------------------------------------

@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e300", "1" + "0" * 400,
                                   '"9999-12-31T23:59:59-01:00"', "-1e300"])
def test_a_bad_context_timestamp_is_422_naming_it(module_server, value):
    r = _post(module_server.url, "/search",
              b'{"query": "daft punk", "context": {"timestamp": %s}}' % value.encode())
    err = _error(r, 422)
    assert err["field"] == "context.timestamp" and "context.timestamp" in err["error"]


@pytest.mark.parametrize("value", ["NaN", "Infinity", "1e300", "1" + "0" * 400, "-5",
                                   str(time.time() + 3 * 365 * 86400),
                                   '"2200-01-01T00:00:00Z"'],
                         ids=["nan", "infinity", "1e300", "1e400", "negative", "in-3-years",
                              "year-2200"])
def test_a_bad_event_timestamp_is_422_naming_it(module_server, value):
    body = (b'{"events": [{"entity_id": "1", "type": "click", "query": "x"}, '
            b'{"entity_id": "1", "type": "click", "timestamp": %s}]}' % value.encode())
    err = _error(_post(module_server.url, "/feedback", body), 422)
    assert err["field"] == "events[1].timestamp", err
    assert "timestamp" in err["error"]


def test_a_context_timestamp_within_range_answers(module_server):
    for value in (b"1700000000", b'"2024-01-02T03:04:05Z"'):
        r = _post(module_server.url, "/search",
                  b'{"query": "daft punk", "context": {"timestamp": %s}}' % value)
        assert r.status_code == 200, r.text


# --- reused request ids -------------------------------------------------------------------

def test_a_reused_request_id_is_409_naming_the_field(module_server):
    url = module_server.url
    rid = "reuse-" + uuid.uuid4().hex
    first = httpx.post(url + "/search", json={"query": "daft punk", "request_id": rid},
                       timeout=60)
    assert first.status_code == 200, first.text
    again = httpx.post(url + "/search", json={"query": "radiohead", "request_id": rid},
                       timeout=60)
    err = _error(again, 409)
    assert err["field"] == "request_id" and rid in err["error"]
    assert "request_id" in err["hint"]
    # a refused request (422) does not use up its id
    rid2 = "reuse-" + uuid.uuid4().hex
    _error(httpx.post(url + "/search", json={"query": "x", "request_id": rid2, "k": 1000},
                      timeout=60), 422)
    assert httpx.post(url + "/search", json={"query": "x", "request_id": rid2},
                      timeout=60).status_code == 200


def test_ids_of_logged_decisions_are_refused_after_a_restart(serve_spec, start_server):
    server = start_server(serve_spec)
    rid = "logged-" + uuid.uuid4().hex
    assert httpx.post(server.url + "/search", json={"query": "daft punk", "request_id": rid},
                      timeout=60).status_code == 200
    assert server.stop() == 0                       # the decision is logged on shutdown
    logged = pl.read_parquet(serve_spec.parent / "state" / "decisions" / "*.parquet")
    assert rid in logged["request_id"].to_list()
    again = start_server(serve_spec)
    err = _error(httpx.post(again.url + "/search",
                            json={"query": "radiohead", "request_id": rid}, timeout=60), 409)
    assert err["field"] == "request_id"
    assert again.stop() == 0


def _tiny(tmp_path):
    from conftest import tiny_spec

    return tiny_spec(tmp_path)


def test_ltrr_run_refuses_query_ids_already_logged(tmp_path):
    spec = _tiny(tmp_path)
    queries = tmp_path / "q.tsv"
    queries.write_text("q1\tx\nq2\ty\n")
    run = [LTRR, "run", str(spec), "--queries", str(queries), "--format", "jsonl"]
    first = subprocess.run(run, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    again = subprocess.run(run, capture_output=True, text=True)
    assert again.returncode == 1
    assert "q1" in again.stderr and "request id" in again.stderr
    assert f"{queries}:1" in again.stderr                   # the line of the first one
    assert "--no-log" in again.stderr and "Traceback" not in again.stderr
    assert subprocess.run(run + ["--no-log"], capture_output=True, text=True).returncode == 0
    dup = tmp_path / "dup.tsv"
    dup.write_text("d1\tx\nd1\ty\n")
    done = subprocess.run([LTRR, "run", str(spec), "--queries", str(dup)], capture_output=True,
                          text=True)
    assert done.returncode == 1 and "d1" in done.stderr and "twice" in done.stderr
    assert f"{dup}:2" in done.stderr and "lines 1, 2" in done.stderr


def test_used_request_ids_claim_release_and_see_other_writers(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from ltrr.runtime.decision_log import SCHEMA, DecisionLog
    from ltrr.runtime.request_ids import UsedRequestIds

    log = DecisionLog(tmp_path / "decisions")

    def logged(*rids: str) -> None:            # as another worker appends its decisions
        log.append_frame(pl.DataFrame({"request_id": list(rids)}).with_columns(
            pl.lit(None).cast(t).alias(c) for c, t in SCHEMA.items() if c != "request_id"))

    logged("old-1", "old-2")
    used = UsedRequestIds(log, refresh_s=0.0)
    assert used.used("old-1") and not used.claim("old-2")
    with ThreadPoolExecutor(8) as pool:         # concurrent claims of one id: one wins
        assert sum(pool.map(lambda _: used.claim("new"), range(32))) == 1
    used.release("new")                         # its request failed: free again
    assert used.claim("new")
    logged("other-worker")
    assert used.used("other-worker") and not used.claim("other-worker")
    assert not used.used("never")


def test_an_id_claimed_by_one_worker_is_refused_by_another_at_once(tmp_path):
    """Two server workers share a decision log. Before, each knew only its own claims and
    the parts already logged, so one id sent to both within the refresh interval (1 s)
    made two decisions. Now claims are shared through the log's folder at once; a released
    claim (a failed request, retried) is free for every worker."""
    from concurrent.futures import ThreadPoolExecutor

    from ltrr.runtime.decision_log import DecisionLog
    from ltrr.runtime.request_ids import UsedRequestIds

    log = DecisionLog(tmp_path / "decisions")
    a = UsedRequestIds(log, refresh_s=3600.0)   # no refresh of the parts meanwhile
    b = UsedRequestIds(log, refresh_s=3600.0)
    assert a.claim("r1")
    assert not b.claim("r1") and b.used("r1")
    a.release("r1")                             # the request failed; the client retries
    assert b.claim("r1") and not a.claim("r1")
    workers = [UsedRequestIds(log, refresh_s=3600.0) for _ in range(4)]
    with ThreadPoolExecutor(8) as pool:         # one id to every worker at once: one wins
        won = list(pool.map(lambda i: workers[i % 4].claim("r2"), range(32)))
    assert sum(won) == 1
    late = UsedRequestIds(log, refresh_s=3600.0)  # a worker started afterwards knows them
    assert late.used("r1") and late.used("r2") and late.claim("r3")
    with open(log.directory / ".claimed", "ab") as f:
        f.write(b"\x01\x02\x03")               # a torn record of a killed writer
    assert not UsedRequestIds(log).claim("r3") and a.claim("r4") and not b.claim("r4")


def test_health_is_degraded_while_the_log_holds_invalid_timestamps(serve_spec, start_server):
    """A log written before timestamps were checked: learning skips its bad events and
    /health says so (it said ok while the memory arm was poisoned)."""
    from ltrr.feedback.events import EVENT_SCHEMA, EventLog

    bad = pl.DataFrame([{**{k: None for k in EVENT_SCHEMA}, "event_id": "bad-1",
                         "entity_id": "289", "type": "click", "query": "x",
                         "timestamp": float("inf")}], schema=EVENT_SCHEMA)
    part = EventLog(serve_spec.parent / "state" / "events").append_frame(bad)
    server = start_server(serve_spec)
    deadline = time.monotonic() + 120
    while True:
        health = httpx.get(server.url + "/health", timeout=30).json()
        if health["learning"].get("runs", 0) >= 1:
            break
        assert time.monotonic() < deadline, health
        time.sleep(0.2)
    assert health["status"] == "degraded", health
    text = " ".join(health["problems"])
    assert part.name in text and "invalid timestamps" in text and "--quarantine-invalid" in text
    assert server.stop() == 0
