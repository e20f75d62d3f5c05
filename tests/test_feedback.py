"""Feedback ingestion: validation with locations, idempotent log, learners get joined events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import polars as pl
import pytest

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
    pl.DataFrame({"id": ["a", "b"], "name": ["x", "y"]}).write_parquet(tmp_path / "c.parquet")
    spec = tmp_path / "s.yaml"
    spec.write_text("name: t\ncatalog: {path: c.parquet}\n"
                    "slotters: [{id: u, use: dictionary, with: {slots: {n: {column: name, "
                    "entity: true, min_chars: 1}}}}]\n"
                    "arms: [{id: names, use: entity_lookup, from: [u]}]\n"
                    "policy: {budget: 5}\noutput: {k: 2}\n")
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
