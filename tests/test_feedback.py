"""Feedback ingestion: validation with locations, idempotent log, learners get joined events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
from conftest import tiny_spec

from ltrr.compiler import compile_spec
from ltrr.components import Arm, Learner
from ltrr.errors import RunError
from ltrr.feedback.events import read_events
from ltrr.feedback.ingest import event_log, ingest
from ltrr.hookspecs import hookimpl
from ltrr.registry import build_registry
from ltrr.runtime.pipeline import Pipeline
from ltrr.spec import load_spec_text
from ltrr.types import Candidate, Query

SEEN: list[pl.DataFrame] = []


class RecordingArm(Arm, Learner):
    """Returns a0..; records what it learns from."""

    name = "recording"

    def retrieve_batch(self, requests):
        return [[Candidate(f"a{i}", self.ctx.node_id, i + 1, 1.0) for i in range(r.k)]
                for r in requests]

    def learn(self, interactions):
        SEEN.append(interactions)
        return {"rows": interactions.height}


@pytest.fixture()
def plan(tmp_path):
    pl.DataFrame({"id": [f"a{i}" for i in range(5)]}).write_parquet(tmp_path / "c.parquet")
    reg = build_registry(extra=[("rec", SimpleNamespace(ltrr_components=hookimpl(
        lambda: [RecordingArm])))])
    spec = load_spec_text("name: t\ncatalog: {path: c.parquet}\n"
                          "arms: [{id: rec, use: recording}]\npolicy: {budget: 3}\n"
                          "output: {k: 3}\n", tmp_path / "s.yaml")
    return compile_spec(spec, reg), reg


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_events_join_their_decisions_and_replays_add_nothing(plan, tmp_path):
    plan, reg = plan
    with Pipeline(plan, registry=reg) as p:
        p.run(Query("req-1", "some query", "u7"))
    events = write(tmp_path / "e.jsonl", [
        {"event_id": "e1", "request_id": "req-1", "entity_id": "a1", "type": "click",
         "position": 2, "timestamp": 100.0},
        {"event_id": "e2", "request_id": "req-1", "entity_id": "a1", "type": "play"},
    ])
    SEEN.clear()
    first = ingest(plan, read_events(events, plan.model.feedback.weights))
    assert first["new"] == 2 and first["learners"]["rec"] == {"rows": 2}
    rows = SEEN[0].sort("event_id").to_dicts()
    assert rows[0]["query"] == "some query" and rows[0]["user_id"] == "u7"
    assert [r["weight"] for r in rows] == [1.0, 1.0]
    again = ingest(plan, read_events(events, plan.model.feedback.weights))
    assert again["new"] == 0 and len(SEEN) == 1
    assert event_log(plan).read().height == 2


def test_events_without_ids_are_still_idempotent(plan, tmp_path):
    plan, _ = plan
    events = write(tmp_path / "e.jsonl", [{"entity_id": "a1", "type": "click",
                                           "query": "x", "timestamp": 5}])
    ingest(plan, read_events(events))
    ingest(plan, read_events(events))
    assert event_log(plan).read().height == 1


@pytest.mark.parametrize("row,where,message", [
    ({"entity_id": "a", "type": "like"}, "field 'type'", "no weight in the spec"),
    ({"type": "click"}, "field 'entity_id'", "missing"),
    ({"entity_id": "a", "type": "click", "position": 0}, "field 'position'", "positive"),
    ({"entity_id": "a", "type": "click", "timestamp": "yesterday"}, "field 'timestamp'",
     "ISO 8601"),
    ({"entity_id": "a", "type": "click", "colour": "red"}, "e.jsonl:2", "unknown field"),
])
def test_bad_events_are_rejected_with_file_line_and_field(tmp_path, row, where, message):
    path = write(tmp_path / "e.jsonl", [{"entity_id": "ok", "type": "click"}, row])
    with pytest.raises(RunError) as err:
        read_events(path, {"click": 1.0, "play": 1.0})
    assert f"{path}:2" in str(err.value) and where in str(err.value)
    assert message in str(err.value)


def test_feedback_cli_reports_new_events(tmp_path):
    spec = tiny_spec(tmp_path)
    events = write(tmp_path / "e.jsonl", [{"entity_id": "a", "type": "click", "query": "x"}])
    ltrr = os.path.join(os.path.dirname(sys.executable), "ltrr")
    done = subprocess.run([ltrr, "feedback", str(spec), str(events)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert "1 new of 1 events logged" in done.stdout
    done = subprocess.run([ltrr, "feedback", str(spec), str(events)], capture_output=True,
                          text=True)
    assert "0 new of 1 events logged" in done.stdout
    log = pl.read_parquet(tmp_path / ".ltrr/t/events/*.parquet")
    assert log["entity_id"].to_list() == ["a"]


def test_a_failed_learner_catches_up_on_the_next_ingestion(plan, tmp_path, monkeypatch):
    plan, _ = plan
    first = write(tmp_path / "a.jsonl", [{"entity_id": "a1", "type": "click", "query": "x"}])

    def broken(self, interactions):
        raise RuntimeError("learner crashed")

    monkeypatch.setattr(RecordingArm, "learn", broken)
    with pytest.raises(RuntimeError):
        ingest(plan, read_events(first))
    monkeypatch.undo()
    SEEN.clear()
    second = write(tmp_path / "b.jsonl", [{"entity_id": "a2", "type": "play", "query": "y"}])
    report = ingest(plan, read_events(second))
    assert report["learners"]["rec"] == {"rows": 2}          # the missed event and the new one
    assert sorted(SEEN[0]["entity_id"].to_list()) == ["a1", "a2"]
    assert ingest(plan, read_events(second))["learners"] == {}   # nothing pending


def test_interactions_carry_candidate_membership_and_the_action(plan, tmp_path):
    plan, reg = plan
    with Pipeline(plan, registry=reg) as p:
        p.run(Query("req-9", "q"))
    events = write(tmp_path / "e.jsonl", [
        {"request_id": "req-9", "entity_id": "a2", "type": "play"},
        {"request_id": "req-9", "entity_id": "zz", "type": "play"},
        {"request_id": "unknown", "entity_id": "a0", "type": "click"}])
    SEEN.clear()
    ingest(plan, read_events(events))
    rows = {r["entity_id"]: r for r in SEEN[0].to_dicts()}
    assert rows["a2"]["in_candidates"] and rows["a2"]["arms"] == ["rec"]
    assert rows["a2"]["allocation"] == [{"arm": "rec", "k": 3}]
    assert rows["a2"]["probability"] == 1.0
    assert not rows["zz"]["in_candidates"]
    assert not rows["a0"]["in_candidates"] and rows["a0"]["allocation"] is None


# --- the vectorised reader, the shared join, outcomes (issue 5: ingestion at speed) ---------

MIXED = [
    {"event_id": "e1", "request_id": "r1", "user_id": "u1", "entity_id": "a1",
     "type": "click", "position": 2, "timestamp": 100.5},
    {"request_id": "r1", "user_id": "u1", "entity_id": "a2", "type": "play",
     "timestamp": 101},                                        # id derived
    {"user_id": "u2", "entity_id": 17, "type": "skip", "query": "metal",
     "timestamp": 102.25},                                     # organic, integer entity
    {"event_id": "e4", "entity_id": "a3", "type": "click", "timestamp": 99.0,
     "query": None, "position": None},
    {"event_id": "e1", "request_id": "r1", "user_id": "u1", "entity_id": "a1",
     "type": "click", "position": 2, "timestamp": 100.5},    # a duplicate, kept by reading
]
WEIGHTS = {"click": 1.0, "play": 1.0, "skip": -0.5}


def _by_rows(rows, path):
    from ltrr.errors import Location
    from ltrr.feedback.events import events_from_rows

    return events_from_rows(rows, lambda i: Location(str(path), i + 1), WEIGHTS)


def _no_row_path(monkeypatch):
    import ltrr.feedback.events as ev

    def refuse(*args, **kwargs):
        raise AssertionError("the row-by-row path ran")

    monkeypatch.setattr(ev, "_jsonl_rows", refuse)
    monkeypatch.setattr(ev, "validate", refuse)


def test_vectorised_jsonl_reading_gives_the_row_paths_frame(tmp_path, monkeypatch):
    path = write(tmp_path / "e.jsonl", MIXED)
    expected = _by_rows(MIXED, path)
    _no_row_path(monkeypatch)
    got = read_events(path, WEIGHTS)
    assert got.equals(expected)
    assert got["event_id"][1] == expected["event_id"][1] and len(got["event_id"][1]) == 20
    assert got["entity_id"][2] == "17" and got.schema == expected.schema


def test_vectorised_parquet_reading_gives_the_row_paths_frame(tmp_path, monkeypatch):
    path = tmp_path / "e.parquet"
    rows = [dict(r, entity_id=str(r["entity_id"])) for r in MIXED]
    pl.DataFrame(rows, schema={"event_id": pl.String, "request_id": pl.String,
                               "user_id": pl.String, "entity_id": pl.String,
                               "type": pl.String, "position": pl.Int64,
                               "timestamp": pl.Float64, "query": pl.String}
                 ).write_parquet(path)
    expected = _by_rows(rows, path)
    _no_row_path(monkeypatch)
    assert read_events(path, WEIGHTS).equals(expected)


@pytest.mark.parametrize("lines", [
    # values polars would read differently from json: the row path decides
    ['{"request_id": 7, "entity_id": "a", "type": "click", "timestamp": 1}',
     '{"request_id": "r", "entity_id": "a", "type": "click", "timestamp": 1}'],
    ['{"entity_id": "a", "type": "play", "type": "click", "timestamp": 1}'],
    ['{"entity_id": "a", "type": "click", "timestamp": "2024-01-02T03:04:05+01:00"}',
     '{"entity_id": "a", "type": "click", "timestamp": 20240102}'],
])
def test_unusual_but_valid_lines_read_as_json_reads_them(tmp_path, lines):
    path = tmp_path / "e.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert read_events(path, WEIGHTS).equals(_by_rows([json.loads(x) for x in lines], path))


@pytest.mark.parametrize("line,field,message", [
    ('{"query": 1e20, "entity_id": "a", "type": "click"}', "query", "valid string"),
    ('{"entity_id": true, "type": "click"}', "entity_id", "valid string"),
    ('{"entity_id": "' + "x" * 257 + '", "type": "click"}', "entity_id", "at most 256"),
])
def test_files_follow_the_apis_event_model(tmp_path, line, field, message):
    """One Event model for files and /feedback: a file once logged a numeric query as
    '1e+20', an entity id `true` as 'True' and ids of any length, all refused over HTTP."""
    path = tmp_path / "e.jsonl"
    path.write_text('{"entity_id": "ok", "type": "click"}\n' + line + "\n")
    with pytest.raises(RunError) as err:
        read_events(path, WEIGHTS)
    assert f"{path}:2" in str(err.value) and f"field '{field}'" in str(err.value)
    assert message in str(err.value)


def test_a_bad_line_deep_in_a_big_file_is_located(tmp_path):
    rows = [{"event_id": f"e{i}", "entity_id": f"a{i % 50}", "type": "click",
             "position": 1 + i % 10, "timestamp": 1000.0 + i} for i in range(20_000)]
    rows[15_320]["position"] = 0
    path = write(tmp_path / "big.jsonl", rows)
    with pytest.raises(RunError) as err:
        read_events(path, WEIGHTS)
    assert f"{path}:15321" in str(err.value) and "field 'position'" in str(err.value)
    rows[15_320]["position"] = 3
    rows[17_001]["type"] = "like"
    table = tmp_path / "big.parquet"
    pl.DataFrame(rows).write_parquet(table)
    with pytest.raises(RunError) as err:
        read_events(table, WEIGHTS)
    assert f"{table} row 17002" in str(err.value) and "field 'type'" in str(err.value)
    rows[17_001]["type"] = "play"
    pl.DataFrame(rows).write_parquet(table)
    assert read_events(table, WEIGHTS).height == 20_000


def test_undecodable_and_unreadable_files_are_located_errors(tmp_path):
    text = tmp_path / "e.jsonl"
    text.write_bytes(b'{"entity_id": "a", "type": "click"}\n{"entity_id": "\xff", '
                     b'"type": "click"}\n')
    with pytest.raises(RunError) as err:
        read_events(text, WEIGHTS)
    assert f"{text}:2" in str(err.value) and "UTF-8" in str(err.value)
    table = tmp_path / "e.parquet"
    table.write_text("not parquet")
    with pytest.raises(RunError) as err:
        read_events(table, WEIGHTS)
    assert str(table) in str(err.value) and "Parquet" in str(err.value)
    big = write(tmp_path / "p.jsonl", [{"entity_id": "a", "type": "click",
                                        "position": 2**40}])
    with pytest.raises(RunError) as err:
        read_events(big, WEIGHTS)
    assert f"{big}:1" in str(err.value) and "field 'position'" in str(err.value)


def test_only_unlogged_ids_are_appended_across_parts(tmp_path):
    from ltrr.feedback.events import EventLog

    log = EventLog(tmp_path / "events")
    frame = _by_rows([{"event_id": f"e{i}", "entity_id": "a", "type": "click",
                       "timestamp": float(i)} for i in range(10)], tmp_path)
    assert log.append_new(frame[:4]).height == 4
    assert log.append_new(frame[2:7]).height == 3
    added = log.append_new(pl.concat([frame, frame[8:9]]))
    assert added["event_id"].to_list() == ["e7", "e8", "e9"]
    assert sorted(log.read()["event_id"].to_list()) == sorted(frame["event_id"].to_list())


def _append_overlapping(directory: str, start: int) -> int:
    """Append ids start..start+59 in 30 overlapping batches (run in another process)."""
    from ltrr.errors import Location
    from ltrr.feedback.events import EventLog, events_from_rows

    log, new = EventLog(Path(directory)), 0
    for i in range(30):
        rows = [{"event_id": f"e{start + i + j}", "entity_id": "a", "type": "click"}
                for j in range(30)]
        frame = events_from_rows(rows, where=lambda k: Location(f"row {k}"),
                                 weights={"click": 1.0})
        new += log.append_new(frame).height
    return new


def test_writers_in_several_processes_never_log_an_id_twice(tmp_path):
    """Two processes (like two server workers, or a worker and `ltrr feedback`) append
    overlapping ids to one log at the same time: each id is logged exactly once."""
    import multiprocessing

    from ltrr.feedback.events import EventLog

    (tmp_path / "events").mkdir()
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        news = pool.starmap(_append_overlapping, [(str(tmp_path / "events"), 0)] * 2)
    ids = EventLog(tmp_path / "events").read()["event_id"].to_list()
    assert len(ids) == len(set(ids)) == 59 == sum(news)


class OtherRecordingArm(RecordingArm):
    name = "recording2"


@pytest.fixture()
def two_learners(tmp_path):
    pl.DataFrame({"id": [f"a{i}" for i in range(5)]}).write_parquet(tmp_path / "c.parquet")
    reg = build_registry(extra=[("rec", SimpleNamespace(ltrr_components=hookimpl(
        lambda: [RecordingArm, OtherRecordingArm])))])
    spec = load_spec_text("name: t\ncatalog: {path: c.parquet}\n"
                          "arms: [{id: one, use: recording}, {id: two, use: recording2}]\n"
                          "policy: {budget: 4}\noutput: {k: 3}\n", tmp_path / "s.yaml")
    return compile_spec(spec, reg)


def test_learners_behind_by_different_parts_each_get_their_own(two_learners, tmp_path,
                                                               monkeypatch):
    import gc

    plan = two_learners
    first = write(tmp_path / "a.jsonl", [{"entity_id": "a1", "type": "click", "query": "x"}])

    def broken(self, interactions):
        raise RuntimeError("learner crashed")

    monkeypatch.setattr(OtherRecordingArm, "learn", broken)
    with pytest.raises(RuntimeError):
        ingest(plan, read_events(first))
    assert gc.isenabled()                          # collection resumes after a failure
    monkeypatch.undo()
    SEEN.clear()
    second = write(tmp_path / "b.jsonl", [{"entity_id": "a2", "type": "play", "query": "y"}])
    report = ingest(plan, read_events(second))
    assert report["learners"] == {"one": {"rows": 1}, "two": {"rows": 2}}
    assert [sorted(f["entity_id"].to_list()) for f in SEEN] == [["a2"], ["a1", "a2"]]
    assert set(report["seconds"]) >= {"append", "open", "join", "learn"}
    SEEN.clear()
    third = write(tmp_path / "c.jsonl", [{"entity_id": "a3", "type": "play", "query": "z"}])
    ingest(plan, read_events(third))
    assert SEEN[0] is SEEN[1]                     # same pending parts: one join, shared
    assert gc.isenabled()


def _outcomes_by_rows(interactions):
    """The reference: outcomes computed event by event (the original implementation)."""
    by_request: dict = {}
    for r in interactions.filter(pl.col("allocation").is_not_null()).iter_rows(named=True):
        by_request.setdefault(r["request_id"], []).append(r)
    out = []
    for rid, events in by_request.items():
        first = events[0]
        alloc = {a["arm"]: int(a["k"]) for a in first["allocation"]}
        best = max(0.0, *((e["weight"] or 0.0) * (1.0 if e["in_candidates"] else 0.0)
                          for e in events))     # floored: a skip is no worse than nothing
        cost = 0.01 * sum(alloc.values())
        t = json.loads(first["timings_ms"]) if first["timings_ms"] else {}
        cost += 0.1 * max((float(t.get(a, 0.0)) for a in alloc), default=0.0)
        p = first["probability"]
        # a chosen action's probability is in (0, 1]; anything else is no propensity
        p = p if p is not None and 0 < p <= 1 else None
        out.append((rid, alloc, p, round(best - cost, 9),
                    json.loads(first["action_features"]) if first["action_features"] else None,
                    first["query"], first["user_id"],
                    min((e["timestamp"] for e in events if e["timestamp"] is not None),
                        default=0.0),
                    [(e["entity_id"], list(e["arms"] or [])) for e in events
                     if e["in_candidates"] and (e["weight"] or 0.0) > 0],
                    first["action_index"], any((e["weight"] or 0.0) > 0 for e in events)))
    return sorted(out, key=lambda o: o[7])


def test_outcomes_match_the_event_by_event_definition():
    import random

    from ltrr.feedback.interactions import interaction_frame
    from ltrr_plugins.policies.reward import RewardParams, outcomes

    rng = random.Random(5)
    rows = []
    for i in range(400):
        rid = f"r{rng.randrange(120)}" if rng.random() < 0.9 else None
        known = rid is not None and int(rid[1:]) % 7 != 0
        k = int(rid[1:]) % 3 if rid else 0
        rows.append({
            "event_id": f"e{i}", "request_id": rid, "user_id": f"u{k}",
            "query": f"q{k}", "entity_id": f"a{rng.randrange(9)}",
            "type": "click", "weight": rng.choice([1.0, 2.0, -0.5, 0.0, None]),
            "position": 1, "timestamp": rng.choice([None, float(rng.randrange(1000))]),
            "in_candidates": rng.choice([True, False, None]) if known else False,
            "arms": rng.choice([["x"], ["x", "y"], None]) if known else None,
            "allocation": [{"arm": "x", "k": 5 + k}, {"arm": "y", "k": 5}] if known else None,
            "probability": rng.choice([0.5, 1.0, 0.0, None, 1.5]) if known else None,
            "action_index": k if known else None,
            "pmf": None,
            "action_features": json.dumps({"query": {"len": str(k)}}) if known and k else None,
            "timings_ms": json.dumps({"x": 2.0 * k, "y": 1.5}) if known else None})
    frame = interaction_frame(rows)
    got = [(o.request_id, o.allocation, o.probability, round(o.reward, 9), o.features,
            o.query, o.user_id, o.timestamp, o.engaged, o.action_index, o.positive)
           for o in outcomes(frame, RewardParams(cost_per_candidate=0.01, cost_per_ms=0.1))]
    assert got == _outcomes_by_rows(frame) and len(got) > 50


def test_decisions_for_reads_newest_parts_first_and_keeps_the_latest_of_a_reused_id(tmp_path):
    from ltrr.feedback import ingest as ingest_mod
    from ltrr.runtime.decision_log import SCHEMA, DecisionLog

    log = DecisionLog(tmp_path / "decisions")

    def part(rid: str, query: str) -> None:
        log.append_frame(pl.DataFrame([{"request_id": rid, "query": query, "timestamp": 1.0}])
                         .with_columns(pl.lit(None).cast(t).alias(c) for c, t in SCHEMA.items()
                                       if c not in ("request_id", "query", "timestamp")))

    for i in range(150):                        # more parts than one chunk
        part(f"r{i}", f"q{i}")
    part("r5", "reused")                         # a client reused request id r5
    got = ingest_mod.decisions_for(None, ["r0", "r5", "r149", "nope"], log)
    assert sorted(got["request_id"].to_list()) == ["r0", "r149", "r5"]
    assert got.filter(pl.col("request_id") == "r5")["query"].to_list() == ["reused"]
    assert got.schema == SCHEMA
